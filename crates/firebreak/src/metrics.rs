//! Every Prometheus metric the daemon exports, except delivery's (owned by
//! `firebreak_delivery::DeliveryMetrics`, registered in the same registry). Each name is
//! defined here once; `deploy/` dashboards and alerts use these names, and a test
//! checks that every name they use exists.
//!
//! Label values that name a closed set (stage, drop reason, stream state, auth-failure
//! reason, throttle limit) come from the enums below, so a call site cannot invent one;
//! the labelled metrics behind them are private and reached through typed methods.
//!
//! The streams' metrics (`firebreak_streams`, `firebreak_frames_dropped_total`,
//! `firebreak_stream_last_frame_age_seconds`) are read when `/metrics` is scraped, by a
//! [`StreamCollector`] asking the ingest for its streams' statistics
//! ([`StreamSource`]): a stream that is forgotten leaves the exposition, and the
//! dropped-frame counters are the live streams' cumulative counts plus the retained
//! total of streams that are gone, so they never go down.

use std::sync::{Arc, OnceLock, Weak};

use firebreak_media::ingest::{StreamState, StreamStats};
use prometheus::core::{Collector, Desc};
use prometheus::proto::MetricFamily;
use prometheus::{
    Encoder, GaugeVec, Histogram, HistogramOpts, HistogramVec, IntCounter, IntCounterVec,
    IntGaugeVec, Opts, Registry, TextEncoder,
};

/// A detection stage timed per frame (`firebreak_stage_seconds{stage}`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Stage {
    /// Frame decode to detector pick-up.
    Decode,
    /// PDQ.
    Hash,
    /// Bank and vPDQ window look-ups.
    Match,
    /// Classifiers.
    Classify,
    /// The escalation policy.
    Policy,
    /// Into the outbox.
    Delivery,
}

impl Stage {
    /// Every stage, in pipeline order.
    pub const ALL: [Stage; 6] = [
        Stage::Decode,
        Stage::Hash,
        Stage::Match,
        Stage::Classify,
        Stage::Policy,
        Stage::Delivery,
    ];

    /// The label value.
    pub fn as_str(self) -> &'static str {
        match self {
            Stage::Decode => "decode",
            Stage::Hash => "hash",
            Stage::Match => "match",
            Stage::Classify => "classify",
            Stage::Policy => "policy",
            Stage::Delivery => "delivery",
        }
    }
}

/// Why a frame was lost (`firebreak_frames_dropped_total{reason}`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum DropReason {
    /// A sampled frame replaced in a full queue (the detectors were behind).
    QueueFull,
    /// A packet the decoder rejected.
    DecodeError,
    /// A switch to keyframes only because of sustained drops.
    Degraded,
    /// A frame the detectors could not read (the engine's count).
    BadFrame,
}

impl DropReason {
    /// Every reason.
    pub const ALL: [DropReason; 4] = [
        DropReason::QueueFull,
        DropReason::DecodeError,
        DropReason::Degraded,
        DropReason::BadFrame,
    ];

    /// The reasons counted by the streams themselves.
    pub const BY_STREAMS: [DropReason; 3] = [
        DropReason::QueueFull,
        DropReason::DecodeError,
        DropReason::Degraded,
    ];

    /// The label value.
    pub fn as_str(self) -> &'static str {
        match self {
            DropReason::QueueFull => "queue_full",
            DropReason::DecodeError => "decode_error",
            DropReason::Degraded => "degraded",
            DropReason::BadFrame => "bad_frame",
        }
    }

    /// A stream's cumulative count for this reason (`None`: not a stream's count).
    pub fn of(self, stats: &StreamStats) -> Option<u64> {
        match self {
            DropReason::QueueFull => Some(stats.dropped_queue_full),
            DropReason::DecodeError => Some(stats.decode_errors),
            DropReason::Degraded => Some(stats.degraded),
            DropReason::BadFrame => None,
        }
    }
}

/// Why a request was refused by auth (`firebreak_auth_failures_total{reason}`; the
/// audit log's `auth.denied` entries).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum AuthFailure {
    /// No credential.
    Missing,
    /// An unknown bearer token.
    BadToken,
    /// A wrong or unknown HMAC signature.
    BadSignature,
    /// A signed request's timestamp too far from ours.
    Stale,
    /// A signature seen before.
    Replay,
    /// A signed body that does not match its declared digest.
    DigestMismatch,
    /// A signed request without its tenant or timestamp.
    Malformed,
    /// A valid credential without the route's scope.
    Scope,
    /// A client address throttled after too many failures.
    Throttled,
}

impl AuthFailure {
    /// The label value.
    pub fn as_str(self) -> &'static str {
        match self {
            AuthFailure::Missing => "missing",
            AuthFailure::BadToken => "bad_token",
            AuthFailure::BadSignature => "bad_signature",
            AuthFailure::Stale => "stale",
            AuthFailure::Replay => "replay",
            AuthFailure::DigestMismatch => "digest_mismatch",
            AuthFailure::Malformed => "malformed",
            AuthFailure::Scope => "scope",
            AuthFailure::Throttled => "throttled",
        }
    }
}

/// Which limit answered 429 (`firebreak_throttled_total{limit}`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum ThrottleLimit {
    /// A tenant's request rate.
    TenantRate,
    /// A client address's failed authentications.
    AuthFailures,
    /// A second concurrent push to one stream.
    FeederBusy,
    /// Request bodies in memory at once (answered 503).
    InflightBodies,
}

impl ThrottleLimit {
    /// The label value.
    pub fn as_str(self) -> &'static str {
        match self {
            ThrottleLimit::TenantRate => "tenant_rate",
            ThrottleLimit::AuthFailures => "auth_failures",
            ThrottleLimit::FeederBusy => "feeder_busy",
            ThrottleLimit::InflightBodies => "inflight_bodies",
        }
    }
}

/// A fleet-shared compacted topic (`firebreak_shared_*{topic}`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum SharedTopic {
    /// Bank entries (`firebreak.banks`).
    Banks,
    /// Policy versions (`firebreak.policy`).
    Policy,
}

impl SharedTopic {
    /// The label value.
    pub fn as_str(self) -> &'static str {
        match self {
            SharedTopic::Banks => "banks",
            SharedTopic::Policy => "policy",
        }
    }
}

/// Why a shared-topic record was skipped (`firebreak_shared_errors_total{reason}`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum SharedError {
    /// No schema header, or a schema version this build does not read.
    UnknownSchema,
    /// The key or value cannot be decoded.
    Corrupt,
    /// Decoded but refused (import hygiene, a bank's kind, an invalid policy).
    Rejected,
    /// The broker or the client failed (the reader retries).
    Broker,
}

impl SharedError {
    /// The label value.
    pub fn as_str(self) -> &'static str {
        match self {
            SharedError::UnknownSchema => "unknown_schema",
            SharedError::Corrupt => "corrupt",
            SharedError::Rejected => "rejected",
            SharedError::Broker => "broker",
        }
    }
}

/// Every stream state, for `firebreak_streams{state}` (all are exported, zeros too).
pub const STREAM_STATES: [StreamState; 5] = [
    StreamState::Starting,
    StreamState::Live,
    StreamState::Stalled,
    StreamState::Ended,
    StreamState::Failed,
];

/// Whether a stream in `state` is still running (and so has a last-frame age).
pub fn is_running(state: StreamState) -> bool {
    match state {
        StreamState::Starting | StreamState::Live | StreamState::Stalled => true,
        StreamState::Ended | StreamState::Failed => false,
    }
}

/// Frames dropped by the streams' own reasons, summed over streams.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct DropCounts {
    counts: [u64; DropReason::BY_STREAMS.len()],
}

impl DropCounts {
    /// One stream's cumulative counts.
    pub fn of(stats: &StreamStats) -> DropCounts {
        DropCounts {
            counts: DropReason::BY_STREAMS.map(|r| r.of(stats).unwrap_or(0)),
        }
    }

    /// These counts with `n` more frames dropped for `reason` (a stream's own reason).
    pub fn with(mut self, reason: DropReason, n: u64) -> DropCounts {
        if let Some(i) = DropReason::BY_STREAMS.iter().position(|r| *r == reason) {
            self.counts[i] += n;
        }
        self
    }

    /// Adds `other`'s counts.
    pub fn add(&mut self, other: &DropCounts) {
        for (n, more) in self.counts.iter_mut().zip(other.counts) {
            *n += more;
        }
    }

    /// The count for `reason` (0 for reasons the streams do not count).
    pub fn get(&self, reason: DropReason) -> u64 {
        DropReason::BY_STREAMS
            .iter()
            .position(|r| *r == reason)
            .map_or(0, |i| self.counts[i])
    }
}

/// What the collector needs of one stream.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StreamReading {
    /// Stream id.
    pub id: String,
    /// Lifecycle state.
    pub state: StreamState,
    /// Its cumulative drops.
    pub dropped: DropCounts,
    /// Milliseconds since its last sampled frame, if any.
    pub since_last_frame_ms: Option<u64>,
}

impl StreamReading {
    /// From a stream's statistics.
    pub fn new(id: &str, stats: &StreamStats) -> StreamReading {
        StreamReading {
            id: id.to_owned(),
            state: stats.state,
            dropped: DropCounts::of(stats),
            since_last_frame_ms: stats.since_last_frame_ms,
        }
    }
}

/// The streams as the collector sees them at one scrape.
#[derive(Debug, Clone, Default)]
pub struct StreamSnapshot {
    /// Every stream the ingest still holds.
    pub streams: Vec<StreamReading>,
    /// The final drop counts of every stream it has forgotten, read together with
    /// `streams` (a stream is in exactly one of the two).
    pub retired: DropCounts,
}

/// Where the stream metrics come from (the ingest's stream registry).
pub trait StreamSource: Send + Sync {
    /// The streams and the retained counts of forgotten ones, read at once.
    fn stream_snapshot(&self) -> StreamSnapshot;
}

/// Reads the streams' metrics at scrape time.
pub struct StreamCollector {
    source: Arc<OnceLock<Weak<dyn StreamSource>>>,
    /// Frames the engine dropped itself ([`DropReason::BadFrame`]).
    bad_frames: IntCounter,
    descs: Vec<Desc>,
}

impl std::fmt::Debug for StreamCollector {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("StreamCollector").finish_non_exhaustive()
    }
}

fn streams_gauge() -> IntGaugeVec {
    IntGaugeVec::new(
        Opts::new("firebreak_streams", "Streams by state."),
        &["state"],
    )
    .expect("valid metric")
}

fn dropped_counter() -> IntCounterVec {
    IntCounterVec::new(
        Opts::new("firebreak_frames_dropped_total", "Frames lost, by reason."),
        &["reason"],
    )
    .expect("valid metric")
}

fn age_gauge() -> GaugeVec {
    GaugeVec::new(
        Opts::new(
            "firebreak_stream_last_frame_age_seconds",
            "Seconds since the stream's last sampled frame.",
        ),
        &["stream"],
    )
    .expect("valid metric")
}

impl StreamCollector {
    fn new(source: Arc<OnceLock<Weak<dyn StreamSource>>>, bad_frames: IntCounter) -> Self {
        let descs = [
            streams_gauge().desc(),
            dropped_counter().desc(),
            age_gauge().desc(),
        ]
        .into_iter()
        .flatten()
        .cloned()
        .collect();
        StreamCollector {
            source,
            bad_frames,
            descs,
        }
    }
}

impl Collector for StreamCollector {
    fn desc(&self) -> Vec<&Desc> {
        self.descs.iter().collect()
    }

    fn collect(&self) -> Vec<MetricFamily> {
        let snapshot = self
            .source
            .get()
            .and_then(Weak::upgrade)
            .map(|s| s.stream_snapshot())
            .unwrap_or_default();
        // Fresh metrics each scrape: what is not in the snapshot is not exported.
        let (streams, dropped, age) = (streams_gauge(), dropped_counter(), age_gauge());
        for state in STREAM_STATES {
            streams.with_label_values(&[state.name()]);
        }
        let mut totals = snapshot.retired;
        for st in &snapshot.streams {
            streams.with_label_values(&[st.state.name()]).inc();
            totals.add(&st.dropped);
            if let Some(ms) = st.since_last_frame_ms.filter(|_| is_running(st.state)) {
                age.with_label_values(&[&st.id]).set(ms as f64 / 1000.0);
            }
        }
        for reason in DropReason::ALL {
            let n = match reason {
                DropReason::BadFrame => self.bad_frames.get(),
                r => totals.get(r),
            };
            dropped.with_label_values(&[reason.as_str()]).inc_by(n);
        }
        [streams.collect(), dropped.collect(), age.collect()]
            .into_iter()
            .flatten()
            .collect()
    }
}

/// The daemon's metrics.
#[derive(Debug, Clone)]
pub struct Metrics {
    /// The registry `/metrics` encodes.
    pub registry: Registry,
    /// Seconds per stage (`decode` is frame decode to detector pick-up).
    stage_seconds: HistogramVec,
    /// Frames handed to the detectors.
    pub frames_sampled: IntCounter,
    /// Frames the engine dropped ([`DropReason::BadFrame`], exported by the collector).
    bad_frames: IntCounter,
    /// The streams the collector reads (set once the ingest exists).
    streams: Arc<OnceLock<Weak<dyn StreamSource>>>,
    /// PDQ and video matches by bank.
    pub matches: IntCounterVec,
    /// Escalation decisions by tier.
    pub escalations: IntCounterVec,
    /// Current tier index per stream (0 = none).
    pub stream_tier: IntGaugeVec,
    /// HTTP requests by route and status.
    pub http_requests: IntCounterVec,
    /// Requests refused by auth, by reason.
    auth_failures: IntCounterVec,
    /// Escalations that could not enter the outbox.
    pub accept_errors: IntCounter,
    /// Connections closed at once because the server had `max_connections` open.
    pub connections_refused: IntCounter,
    /// Requests refused by a limit (429 or 503), by limit.
    throttled: IntCounterVec,
    /// Bytes of request bodies reserved in memory now.
    pub inflight_body_bytes: prometheus::IntGauge,
    /// Fleet mode: ms from a segment's acceptance at a hook to its hand-over to the
    /// owner's decoder, for the last segment read from each owned partition.
    fleet_segment_lag: IntGaugeVec,
    /// Fleet mode: the same delay for every segment, seconds.
    fleet_segment_delay: prometheus::Histogram,
    /// Fleet mode: workers alive (heartbeats on the state topic), this one included.
    pub fleet_workers: prometheus::IntGauge,
    /// Times the allocator's free pages were given back to the system.
    pub heap_trims: prometheus::IntCounter,
    /// Shared topics: records behind the reader's last catch-up markers.
    shared_lag: IntGaugeVec,
    /// Shared topics: 1 once caught up.
    shared_caught_up: IntGaugeVec,
    /// Shared topics: records applied.
    shared_applied: IntCounterVec,
    /// Shared topics: records skipped, by reason.
    shared_errors: IntCounterVec,
    /// Shared topics: seconds from a record's timestamp to its application.
    shared_delay: HistogramVec,
    /// 1 while a write of the incident journal or the audit log last failed.
    pub disk_alarm: prometheus::IntGauge,
    /// Signal records and shadow decisions dropped before their writer, by sink.
    signal_drops: IntCounterVec,
}

/// A writer that drops what its queue cannot hold
/// (`firebreak_signal_records_dropped_total{sink}`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SignalSinkKind {
    /// The local signal log (`[signals]`).
    Log,
    /// The shadow policies' decisions (`shadow.jsonl`).
    Shadow,
}

/// `firebreak_signal_records_dropped_total{sink}`, for the worker's registry and the
/// coordinator's (whose copy of the signals topic goes through a signal log too).
pub fn signal_drops_vec() -> IntCounterVec {
    IntCounterVec::new(
        Opts::new(
            "firebreak_signal_records_dropped_total",
            "Signal records (sink log) and shadow decisions (sink shadow) dropped because their writer's queue was full.",
        ),
        &["sink"],
    )
    .expect("a valid metric")
}

/// Counts one record `sink` dropped into `counter`, with a warning at the first drop and
/// every `every` after it.
pub fn count_signal_drop(counter: &IntCounter, sink: SignalSinkKind, every: u64) {
    counter.inc();
    let dropped = counter.get();
    if dropped % every == 1 {
        tracing::warn!(
            sink = sink.label(),
            dropped,
            "a signal writer's queue is full: records not written"
        );
    }
}

impl SignalSinkKind {
    /// Its `sink` label.
    pub fn label(self) -> &'static str {
        match self {
            SignalSinkKind::Log => "log",
            SignalSinkKind::Shadow => "shadow",
        }
    }
}

impl Metrics {
    /// Creates and registers everything (plus delivery's metrics, returned beside).
    pub fn new() -> (Metrics, firebreak_delivery::DeliveryMetrics) {
        let registry = Registry::new();
        let buckets = vec![
            0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0,
        ];
        let m = Metrics {
            stage_seconds: HistogramVec::new(
                HistogramOpts::new(
                    "firebreak_stage_seconds",
                    "Seconds spent per detection stage.",
                )
                .buckets(buckets),
                &["stage"],
            )
            .unwrap(),
            frames_sampled: IntCounter::new(
                "firebreak_frames_sampled_total",
                "Frames handed to the detectors.",
            )
            .unwrap(),
            bad_frames: IntCounter::new("bad_frames", "Read by the stream collector.").unwrap(),
            streams: Arc::new(OnceLock::new()),
            matches: IntCounterVec::new(
                Opts::new("firebreak_matches_total", "Hash and video matches by bank."),
                &["bank"],
            )
            .unwrap(),
            escalations: IntCounterVec::new(
                Opts::new(
                    "firebreak_escalations_total",
                    "Escalation decisions by tier.",
                ),
                &["tier"],
            )
            .unwrap(),
            stream_tier: IntGaugeVec::new(
                Opts::new(
                    "firebreak_stream_tier",
                    "Current tier index per stream (0 = none).",
                ),
                &["stream"],
            )
            .unwrap(),
            http_requests: IntCounterVec::new(
                Opts::new(
                    "firebreak_http_requests_total",
                    "HTTP requests by route and status.",
                ),
                &["route", "status"],
            )
            .unwrap(),
            auth_failures: IntCounterVec::new(
                Opts::new(
                    "firebreak_auth_failures_total",
                    "Requests refused by auth, by reason.",
                ),
                &["reason"],
            )
            .unwrap(),
            disk_alarm: prometheus::IntGauge::new(
                "firebreak_disk_alarm",
                "1 while the last write of the incident journal or the audit log failed (a full disk?), else 0.",
            )
            .unwrap(),
            signal_drops: signal_drops_vec(),
            accept_errors: IntCounter::new(
                "firebreak_escalation_accept_errors_total",
                "Escalations that could not be written to the outbox.",
            )
            .unwrap(),
            connections_refused: IntCounter::new(
                "firebreak_connections_refused_total",
                "Connections closed at once because the server had max_connections open.",
            )
            .unwrap(),
            throttled: IntCounterVec::new(
                Opts::new(
                    "firebreak_throttled_total",
                    "Requests refused by a limit (429 or 503), by limit.",
                ),
                &["limit"],
            )
            .unwrap(),
            inflight_body_bytes: prometheus::IntGauge::new(
                "firebreak_inflight_body_bytes",
                "Bytes of request bodies reserved in memory now.",
            )
            .unwrap(),
            fleet_segment_lag: IntGaugeVec::new(
                Opts::new(
                    "firebreak_fleet_segment_lag_ms",
                    "Fleet mode: ms from the acceptance of the last segment read from an owned partition (at any worker's hook) to its hand-over to this owner's decoder.",
                ),
                &["partition"],
            )
            .unwrap(),
            heap_trims: prometheus::IntCounter::new(
                "firebreak_heap_trims_total",
                "Times the allocator's free pages were given back to the system after streams ended (ingest.heap_trim_secs).",
            )
            .unwrap(),
            fleet_workers: prometheus::IntGauge::new(
                "firebreak_fleet_workers",
                "Fleet mode: workers alive (a heartbeat on the state topic within the last 5 checkpoints), this one included; each takes one over this of the tenants' request rates.",
            )
            .unwrap(),
            fleet_segment_delay: prometheus::Histogram::with_opts(
                HistogramOpts::new(
                    "firebreak_fleet_segment_delay_seconds",
                    "Fleet mode: seconds from a segment's acceptance at a hook to its hand-over to this owner's decoder.",
                )
                .buckets(vec![
                    0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0,
                ]),
            )
            .unwrap(),
            shared_lag: IntGaugeVec::new(
                Opts::new(
                    "firebreak_shared_lag_records",
                    "Records of a shared topic between the reader and its last catch-up markers.",
                ),
                &["topic"],
            )
            .unwrap(),
            shared_caught_up: IntGaugeVec::new(
                Opts::new(
                    "firebreak_shared_caught_up",
                    "1 once the reader of a shared topic has read back its catch-up markers.",
                ),
                &["topic"],
            )
            .unwrap(),
            shared_applied: IntCounterVec::new(
                Opts::new(
                    "firebreak_shared_records_total",
                    "Records of a shared topic applied.",
                ),
                &["topic"],
            )
            .unwrap(),
            shared_errors: IntCounterVec::new(
                Opts::new(
                    "firebreak_shared_errors_total",
                    "Records of a shared topic skipped (and reader errors), by reason.",
                ),
                &["topic", "reason"],
            )
            .unwrap(),
            shared_delay: HistogramVec::new(
                HistogramOpts::new(
                    "firebreak_shared_apply_delay_seconds",
                    "Seconds from a shared record's timestamp to its application.",
                )
                .buckets(vec![
                    0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0,
                ]),
                &["topic"],
            )
            .unwrap(),
            registry,
        };
        let r = &m.registry;
        r.register(Box::new(m.fleet_segment_lag.clone())).unwrap();
        r.register(Box::new(m.fleet_segment_delay.clone())).unwrap();
        r.register(Box::new(m.fleet_workers.clone())).unwrap();
        r.register(Box::new(m.heap_trims.clone())).unwrap();
        r.register(Box::new(m.shared_lag.clone())).unwrap();
        r.register(Box::new(m.shared_caught_up.clone())).unwrap();
        r.register(Box::new(m.shared_applied.clone())).unwrap();
        r.register(Box::new(m.shared_errors.clone())).unwrap();
        r.register(Box::new(m.shared_delay.clone())).unwrap();
        r.register(Box::new(m.stage_seconds.clone())).unwrap();
        r.register(Box::new(m.frames_sampled.clone())).unwrap();
        r.register(Box::new(m.signal_drops.clone())).unwrap();
        r.register(Box::new(StreamCollector::new(
            m.streams.clone(),
            m.bad_frames.clone(),
        )))
        .unwrap();
        r.register(Box::new(m.matches.clone())).unwrap();
        r.register(Box::new(m.escalations.clone())).unwrap();
        r.register(Box::new(m.stream_tier.clone())).unwrap();
        r.register(Box::new(m.http_requests.clone())).unwrap();
        r.register(Box::new(m.auth_failures.clone())).unwrap();
        r.register(Box::new(m.accept_errors.clone())).unwrap();
        r.register(Box::new(m.disk_alarm.clone())).unwrap();
        r.register(Box::new(m.connections_refused.clone())).unwrap();
        r.register(Box::new(m.throttled.clone())).unwrap();
        r.register(Box::new(m.inflight_body_bytes.clone())).unwrap();
        for s in Stage::ALL {
            m.stage_seconds.with_label_values(&[s.as_str()]);
        }
        let delivery = firebreak_delivery::DeliveryMetrics::new(r).unwrap();
        (m, delivery)
    }

    /// Reads the stream metrics from `source` at every scrape (once; later calls are
    /// ignored). Held weakly: the metrics do not keep the streams alive.
    pub fn watch_streams(&self, source: Weak<dyn StreamSource>) {
        let _ = self.streams.set(source);
    }

    /// Fleet mode: a segment of `partition`, accepted `ms` ago, reached its decoder.
    pub fn fleet_segment_consumed(&self, partition: i32, ms: u64) {
        self.fleet_segment_lag
            .with_label_values(&[&partition.to_string()])
            .set(ms.min(i64::MAX as u64) as i64);
        self.fleet_segment_delay.observe(ms as f64 / 1000.0);
    }

    /// Fleet mode: `partition` is no longer read here.
    pub fn fleet_partition_revoked(&self, partition: i32) {
        let _ = self
            .fleet_segment_lag
            .remove_label_values(&[&partition.to_string()]);
    }

    /// A shared topic's lag (records behind its last catch-up markers).
    pub fn shared_lag(&self, topic: SharedTopic, records: u64) {
        self.shared_lag
            .with_label_values(&[topic.as_str()])
            .set(records.min(i64::MAX as u64) as i64);
    }

    /// Whether a shared topic's reader has caught up.
    pub fn shared_caught_up(&self, topic: SharedTopic, caught_up: bool) {
        self.shared_caught_up
            .with_label_values(&[topic.as_str()])
            .set(i64::from(caught_up));
    }

    /// One record of a shared topic applied, `delay` seconds after its timestamp.
    pub fn shared_applied(&self, topic: SharedTopic, delay: Option<f64>) {
        self.shared_applied
            .with_label_values(&[topic.as_str()])
            .inc();
        if let Some(d) = delay {
            self.shared_delay
                .with_label_values(&[topic.as_str()])
                .observe(d.max(0.0));
        }
    }

    /// One record of a shared topic skipped (or a reader error).
    pub fn shared_error(&self, topic: SharedTopic, reason: SharedError) {
        self.shared_errors
            .with_label_values(&[topic.as_str(), reason.as_str()])
            .inc();
    }

    /// Records of a shared topic skipped for `reason` so far.
    pub fn shared_errors(&self, topic: SharedTopic, reason: SharedError) -> u64 {
        self.shared_errors
            .with_label_values(&[topic.as_str(), reason.as_str()])
            .get()
    }

    /// Times one stage.
    pub fn stage(&self, stage: Stage) -> Histogram {
        self.stage_seconds.with_label_values(&[stage.as_str()])
    }

    /// Counts a frame the engine could not use.
    pub fn bad_frame(&self) {
        self.bad_frames.inc();
    }

    /// The counter of what `sink` drops (its writer counts into it).
    pub fn signal_drops(&self, sink: SignalSinkKind) -> IntCounter {
        self.signal_drops.with_label_values(&[sink.label()])
    }

    /// Counts a request refused by auth.
    pub fn auth_failure(&self, reason: AuthFailure) {
        self.auth_failures
            .with_label_values(&[reason.as_str()])
            .inc();
    }

    /// Counts a request answered 429.
    pub fn throttled(&self, limit: ThrottleLimit) {
        self.throttled.with_label_values(&[limit.as_str()]).inc();
    }

    /// The text exposition.
    pub fn encode(&self) -> String {
        let mut buf = Vec::new();
        TextEncoder::new()
            .encode(&self.registry.gather(), &mut buf)
            .expect("text encoding");
        String::from_utf8(buf).expect("utf-8")
    }
}

#[cfg(test)]
mod tests {
    use std::sync::Mutex;

    use super::*;

    /// Streams whose statistics and retirement a test sets.
    #[derive(Default)]
    struct Streams(Mutex<StreamSnapshot>);

    impl StreamSource for Streams {
        fn stream_snapshot(&self) -> StreamSnapshot {
            self.0.lock().unwrap().clone()
        }
    }

    fn reading(id: &str, state: StreamState, queue_full: u64, since: Option<u64>) -> StreamReading {
        StreamReading {
            id: id.into(),
            state,
            dropped: DropCounts::default().with(DropReason::QueueFull, queue_full),
            since_last_frame_ms: since,
        }
    }

    fn line<'a>(text: &'a str, series: &str) -> Option<&'a str> {
        text.lines()
            .find(|l| l.starts_with(series) && l[series.len()..].starts_with(' '))
            .map(|l| &l[series.len() + 1..])
    }

    #[test]
    fn stream_series_are_read_at_scrape_time_and_leave_with_their_stream() {
        let (m, _) = Metrics::new();
        let streams = Arc::new(Streams::default());
        let weak: Weak<dyn StreamSource> = Arc::downgrade(&streams) as Weak<dyn StreamSource>;
        m.watch_streams(weak);
        *streams.0.lock().unwrap() = StreamSnapshot {
            streams: vec![
                reading("a", StreamState::Live, 3, Some(1500)),
                reading("b", StreamState::Ended, 4, Some(9000)),
            ],
            retired: DropCounts::default(),
        };
        m.bad_frame();
        let text = m.encode();
        assert_eq!(
            line(
                &text,
                "firebreak_stream_last_frame_age_seconds{stream=\"a\"}"
            ),
            Some("1.5")
        );
        assert_eq!(
            line(
                &text,
                "firebreak_stream_last_frame_age_seconds{stream=\"b\"}"
            ),
            None,
            "an ended stream has no age"
        );
        assert_eq!(line(&text, "firebreak_streams{state=\"live\"}"), Some("1"));
        assert_eq!(line(&text, "firebreak_streams{state=\"ended\"}"), Some("1"));
        assert_eq!(
            line(&text, "firebreak_streams{state=\"failed\"}"),
            Some("0")
        );
        assert_eq!(
            line(
                &text,
                "firebreak_frames_dropped_total{reason=\"queue_full\"}"
            ),
            Some("7")
        );
        assert_eq!(
            line(
                &text,
                "firebreak_frames_dropped_total{reason=\"bad_frame\"}"
            ),
            Some("1")
        );

        // `a` ends and is forgotten (its 5 final drops retired); `b` is forgotten too.
        *streams.0.lock().unwrap() = StreamSnapshot {
            streams: vec![],
            retired: DropCounts::default().with(DropReason::QueueFull, 5 + 4),
        };
        let text = m.encode();
        assert!(!text.contains("stream=\"a\""), "{text}");
        assert_eq!(line(&text, "firebreak_streams{state=\"ended\"}"), Some("0"));
        assert_eq!(
            line(
                &text,
                "firebreak_frames_dropped_total{reason=\"queue_full\"}"
            ),
            Some("9")
        );
    }

    #[test]
    fn without_streams_every_family_is_still_exported() {
        let (m, _) = Metrics::new();
        let text = m.encode();
        for state in STREAM_STATES {
            assert!(
                text.contains(&format!(
                    "firebreak_streams{{state=\"{}\"}} 0",
                    state.name()
                )),
                "{text}"
            );
        }
        for reason in DropReason::ALL {
            assert!(
                text.contains(&format!(
                    "firebreak_frames_dropped_total{{reason=\"{}\"}} 0",
                    reason.as_str()
                )),
                "{text}"
            );
        }
        assert!(text.contains("firebreak_stage_seconds_count{stage=\"decode\"} 0"));
    }
}

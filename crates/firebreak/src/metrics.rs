//! Every Prometheus metric the daemon exports, except delivery's (owned by
//! `firebreak_delivery::DeliveryMetrics`, registered in the same registry). Each name is
//! defined here once; `deploy/` dashboards and alerts use these names, and a test
//! checks that every name they use exists.

use prometheus::{
    Encoder, Histogram, HistogramOpts, HistogramVec, IntCounter, IntCounterVec, IntGaugeVec, Opts,
    Registry, TextEncoder,
};

/// The detection stages timed per frame.
pub const STAGES: [&str; 6] = ["decode", "hash", "match", "classify", "policy", "delivery"];

/// The daemon's metrics.
#[derive(Debug, Clone)]
pub struct Metrics {
    /// The registry `/metrics` encodes.
    pub registry: Registry,
    /// Seconds per stage (`decode` is frame decode to detector pick-up).
    pub stage_seconds: HistogramVec,
    /// Streams by state.
    pub streams: IntGaugeVec,
    /// Frames handed to the detectors.
    pub frames_sampled: IntCounter,
    /// Frames lost, by reason.
    pub frames_dropped: IntCounterVec,
    /// PDQ and video matches by bank.
    pub matches: IntCounterVec,
    /// Escalation decisions by tier.
    pub escalations: IntCounterVec,
    /// Current tier index per stream (0 = none).
    pub stream_tier: IntGaugeVec,
    /// Seconds since each stream's last sampled frame.
    pub last_frame_age: prometheus::GaugeVec,
    /// HTTP requests by route and status.
    pub http_requests: IntCounterVec,
    /// Requests refused by auth, by reason.
    pub auth_failures: IntCounterVec,
    /// Escalations that could not enter the outbox.
    pub accept_errors: IntCounter,
    /// Connections closed at once because the server had `max_connections` open.
    pub connections_refused: IntCounter,
    /// Requests refused by a limit (429 or 503), by limit (`tenant_rate`,
    /// `auth_failures`, `inflight_bodies`).
    pub throttled: IntCounterVec,
    /// Bytes of request bodies reserved in memory now.
    pub inflight_body_bytes: prometheus::IntGauge,
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
            streams: IntGaugeVec::new(
                Opts::new("firebreak_streams", "Streams by state."),
                &["state"],
            )
            .unwrap(),
            frames_sampled: IntCounter::new(
                "firebreak_frames_sampled_total",
                "Frames handed to the detectors.",
            )
            .unwrap(),
            frames_dropped: IntCounterVec::new(
                Opts::new("firebreak_frames_dropped_total", "Frames lost, by reason."),
                &["reason"],
            )
            .unwrap(),
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
            last_frame_age: prometheus::GaugeVec::new(
                Opts::new(
                    "firebreak_stream_last_frame_age_seconds",
                    "Seconds since the stream's last sampled frame.",
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
            registry,
        };
        let r = &m.registry;
        r.register(Box::new(m.stage_seconds.clone())).unwrap();
        r.register(Box::new(m.streams.clone())).unwrap();
        r.register(Box::new(m.frames_sampled.clone())).unwrap();
        r.register(Box::new(m.frames_dropped.clone())).unwrap();
        r.register(Box::new(m.matches.clone())).unwrap();
        r.register(Box::new(m.escalations.clone())).unwrap();
        r.register(Box::new(m.stream_tier.clone())).unwrap();
        r.register(Box::new(m.last_frame_age.clone())).unwrap();
        r.register(Box::new(m.http_requests.clone())).unwrap();
        r.register(Box::new(m.auth_failures.clone())).unwrap();
        r.register(Box::new(m.accept_errors.clone())).unwrap();
        r.register(Box::new(m.connections_refused.clone())).unwrap();
        r.register(Box::new(m.throttled.clone())).unwrap();
        r.register(Box::new(m.inflight_body_bytes.clone())).unwrap();
        for s in STAGES {
            m.stage_seconds.with_label_values(&[s]);
        }
        let delivery = firebreak_delivery::DeliveryMetrics::new(r).unwrap();
        (m, delivery)
    }

    /// Times one stage.
    pub fn stage(&self, stage: &str) -> Histogram {
        self.stage_seconds.with_label_values(&[stage])
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

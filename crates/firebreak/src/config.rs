//! The daemon's configuration file (`firebreak run --config FILE`,
//! `firebreak config check FILE`).
//!
//! Two layers: [`ServiceConfig`] and its sections are the file as written (serde
//! structs: strings and numbers, every key defaulted); [`ServiceConfig::validate`]
//! turns it into [`Settings`], the typed contract the daemon is built from (socket
//! addresses, durations, the sink as an enum, sampling, scopes, the source allow-list,
//! the loaded policy, the TLS acceptor), so nothing downstream parses a string again
//! or relies on something having been validated.
//!
//! Every problem is reported at once with its path: unknown keys anywhere (collected
//! while parsing, not just the first), then every semantic issue (bad listen address,
//! bad token hash, unknown scope, missing model directory, an invalid policy file...).
//! Everything has a default such that an empty file runs the embedded setup: the
//! built-in policy, the JSONL sink, no external service.

use std::collections::{BTreeMap, HashSet};
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use firebreak_media::ingest::Sampling;
use firebreak_media::ingest::guard::NetPolicy;
use firebreak_policy::config::PolicyConfig;
use serde::Deserialize;

/// One problem, with where it is (the issue type shared with the policy crate).
pub use firebreak_policy::config::Issue;

/// The whole file.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(default)]
pub struct ServiceConfig {
    /// Banks, outbox, JSONL events, audit log. Default `$FIREBREAK_DATA` or
    /// `./firebreak-data`.
    pub data_dir: Option<PathBuf>,
    /// Names this worker in events (`source`). Default: the host name.
    pub worker_id: Option<String>,
    /// HTTP.
    pub server: Server,
    /// Logging.
    pub log: Log,
    /// Credentials.
    pub auth: Auth,
    /// Defaults for every stream.
    pub ingest: Ingest,
    /// Banks and models.
    pub detectors: Detectors,
    /// The escalation policy.
    pub policy: PolicySection,
    /// Where escalations go.
    pub sink: Sink,
    /// The durable outbox in front of the sink.
    pub outbox: Outbox,
    /// The incident store.
    pub incidents: Incidents,
    /// Streams pulled from the start (more can be registered through the API).
    pub streams: Vec<StreamSpec>,
    /// Fleet mode on Kafka; absent: one process, everything in it.
    pub fleet: Option<Fleet>,
    /// The local signal log (recorded signals for replay).
    pub signals: crate::signals::log::SignalLogConfig,
    /// `firebreak coordinator`: the fleet's crisis coordinator.
    pub coordinator: Coordinator,
    /// Evidence thumbnails (worker and coordinator).
    pub evidence: crate::evidence::EvidenceConfig,
}

/// `[coordinator]`: the crisis coordinator (`firebreak coordinator`, fleet mode). It
/// reads the escalations, signals and incidents topics of `[fleet]` and publishes
/// confirmed content to the banks topic.
#[derive(Debug, Clone, Deserialize)]
#[serde(default)]
pub struct Coordinator {
    /// The workers' escalations (default: `[sink] topic` when the sink is Kafka, else
    /// `firebreak.escalations`).
    pub escalations_topic: Option<String>,
    /// The incident log: every responder action, as an event the platform can follow
    /// too; the coordinator's state is rebuilt from it.
    pub incidents_topic: String,
    /// The bank confirmed content is published to (the built-in policy's crisis rule
    /// matches it).
    pub crisis_bank: String,
    /// The negative bank rejected false positives are published to.
    pub negative_bank: String,
    /// Seconds of each stream's frame hashes kept for confirmations.
    pub history_secs: f64,
    /// Seconds before a stream's first escalation whose frames a confirmation takes.
    pub lookback_secs: f64,
    /// Lowest PDQ quality a confirmation publishes.
    pub min_quality: u8,
    /// Distance at which two frames are the same content (links, common frames).
    pub match_distance: u32,
    /// Streams outside the incident that make a frame common (not published).
    pub common_streams: usize,
    /// Most entries one confirmation publishes.
    pub max_entries: usize,
    /// Linked streams, none escalated, that open an incident of their own (0: never).
    pub spread_min_streams: usize,
    /// Media time (seconds) two streams' matching frames must span to link them: a
    /// shared bumper or ident is shorter than a shared programme.
    pub link_min_span_secs: f64,
    /// Told about every new incident (`POST`, JSON), by the active coordinator only.
    pub webhook_url: Option<String>,
    /// The consumer group whose assignment picks the active coordinator.
    pub group_id: String,
}

impl Default for Coordinator {
    fn default() -> Self {
        Coordinator {
            escalations_topic: None,
            incidents_topic: "firebreak.incidents".into(),
            crisis_bank: "crisis".into(),
            negative_bank: "crisis-rejected".into(),
            history_secs: 600.0,
            lookback_secs: 10.0,
            min_quality: 50,
            match_distance: 31,
            common_streams: 2,
            max_entries: 256,
            spread_min_streams: 5,
            link_min_span_secs: 8.0,
            webhook_url: None,
            group_id: "firebreak-coordinators".into(),
        }
    }
}

impl Coordinator {
    fn validate(&self, out: &mut Vec<Issue>) {
        for (k, v) in [
            ("history_secs", self.history_secs),
            ("lookback_secs", self.lookback_secs),
            ("link_min_span_secs", self.link_min_span_secs),
        ] {
            if !(v.is_finite() && v >= 0.0) {
                out.push(Issue::new(
                    format!("coordinator.{k}"),
                    format!("must be a non-negative number, got {v}"),
                ));
            }
        }
        if self.min_quality > 100 {
            out.push(Issue::new(
                "coordinator.min_quality",
                "must be within 0..=100",
            ));
        }
        if self.match_distance > 255 {
            out.push(Issue::new(
                "coordinator.match_distance",
                "must be within 0..=255",
            ));
        }
        if self.max_entries == 0 || self.common_streams == 0 {
            out.push(Issue::new(
                "coordinator",
                "max_entries and common_streams must be at least 1",
            ));
        }
        if let Some(u) = &self.webhook_url
            && !(u.starts_with("http://") || u.starts_with("https://"))
        {
            out.push(Issue::new(
                "coordinator.webhook_url",
                format!("must be an http(s) URL, got {u:?}"),
            ));
        }
        for (k, v) in [
            ("group_id", &self.group_id),
            ("incidents_topic", &self.incidents_topic),
            ("crisis_bank", &self.crisis_bank),
            ("negative_bank", &self.negative_bank),
        ] {
            if v.trim().is_empty() {
                out.push(Issue::new(format!("coordinator.{k}"), "must not be empty"));
            }
        }
    }
}

/// `[fleet]`: workers sharing streams through Kafka (see `crate::fleet`).
#[derive(Debug, Clone, Deserialize)]
#[serde(default)]
pub struct Fleet {
    /// Kafka bootstrap servers.
    pub brokers: String,
    /// Topic names.
    pub topics: FleetTopics,
    /// The workers' consumer group.
    pub group_id: String,
    /// Partitions of each topic when a worker creates them (the most workers that can
    /// share the load).
    pub partitions: u32,
    /// Replication factor when a worker creates the topics.
    pub replication: u32,
    /// Minutes pushed segments stay on their topic.
    pub segment_retention_mins: f64,
    /// Largest record value, bytes; larger segments are chunked.
    pub max_message_bytes: usize,
    /// The group's session timeout, seconds: a dead worker's streams move after it.
    pub session_timeout_secs: f64,
    /// `cooperative-sticky` (streams that do not move keep running through a
    /// rebalance), `range` or `roundrobin`.
    pub assignment: String,
    /// Seconds between publications of each owned stream's state.
    pub checkpoint_secs: f64,
    /// Hours the signals topic keeps records when a worker creates it.
    pub signals_retention_hours: f64,
    /// librdkafka security properties: only `security.*`, `sasl.*` and `ssl.*` keys.
    pub properties: BTreeMap<String, String>,
}

/// Fleet mode's shared topics (see [`Settings::fleet_shared`]).
#[derive(Debug, Clone, PartialEq)]
pub struct FleetShared {
    /// The bank and policy readers' settings.
    pub feeds: crate::engine::feeds::FeedSettings,
    /// The signals topic.
    pub signals_topic: String,
    /// Its retention when a worker creates it, ms.
    pub signals_retention_ms: u64,
    /// The evidence topic (thumbnails; its retention is `[evidence] retention_hours`).
    pub evidence_topic: String,
}

/// `[fleet.topics]`.
#[derive(Debug, Clone, Deserialize)]
#[serde(default)]
pub struct FleetTopics {
    /// Registrations (compacted), the group's topic.
    pub streams: String,
    /// Pushed segments.
    pub segments: String,
    /// Each stream's state (compacted).
    pub stream_state: String,
    /// Bank entries shared by the fleet (compacted).
    pub banks: String,
    /// Policy versions shared by the fleet (compacted).
    pub policy: String,
    /// Every sampled frame's signals, for the coordinator and replay.
    pub signals: String,
    /// Evidence thumbnails, for the coordinator.
    pub evidence: String,
}

impl Default for FleetTopics {
    fn default() -> Self {
        FleetTopics {
            streams: "firebreak.streams".into(),
            segments: "firebreak.segments".into(),
            stream_state: "firebreak.stream-state".into(),
            banks: "firebreak.banks".into(),
            policy: "firebreak.policy".into(),
            evidence: "firebreak.evidence".into(),
            signals: "firebreak.signals".into(),
        }
    }
}

impl Default for Fleet {
    fn default() -> Self {
        Fleet {
            brokers: String::new(),
            topics: FleetTopics::default(),
            group_id: "firebreak-workers".into(),
            partitions: 64,
            replication: 3,
            segment_retention_mins: 30.0,
            max_message_bytes: 1 << 20,
            session_timeout_secs: 10.0,
            assignment: "cooperative-sticky".into(),
            checkpoint_secs: 1.0,
            signals_retention_hours: 24.0,
            properties: BTreeMap::new(),
        }
    }
}

/// Prefixes of the librdkafka properties `[fleet] properties` may set.
pub const FLEET_PROPERTY_PREFIXES: [&str; 3] = ["security.", "sasl.", "ssl."];

/// Whether `name` can be a Kafka topic name.
fn valid_topic(name: &str) -> bool {
    !name.is_empty()
        && name.len() <= 249
        && name != "."
        && name != ".."
        && name
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'-' | b'_' | b'.'))
}

impl Fleet {
    /// The settings of the fleet's shared bank and policy topics (read by every
    /// worker; see `crate::engine::feeds`).
    pub fn feeds(&self) -> crate::engine::feeds::FeedSettings {
        let mut f = crate::engine::feeds::FeedSettings::new(self.brokers.clone());
        f.banks_topic = self.topics.banks.clone();
        f.policy_topic = self.topics.policy.clone();
        f.partitions = self.partitions.min(i32::MAX as u32) as i32;
        f.replication = self.replication.min(i32::MAX as u32) as i32;
        f.properties = self.properties.clone();
        f
    }

    /// The typed settings (the worker id is filled in by the daemon), or every problem.
    pub fn validate(&self) -> Result<firebreak_delivery::fleet::FleetConfig, Vec<Issue>> {
        let mut out = Vec::new();
        let mut push = |path: &str, message: String| out.push(Issue::new(path, message));
        if self.brokers.trim().is_empty() {
            push("fleet.brokers", "needed in fleet mode".into());
        }
        let t = &self.topics;
        let names = [
            ("fleet.topics.streams", &t.streams),
            ("fleet.topics.segments", &t.segments),
            ("fleet.topics.stream_state", &t.stream_state),
            ("fleet.topics.banks", &t.banks),
            ("fleet.topics.policy", &t.policy),
            ("fleet.topics.signals", &t.signals),
            ("fleet.topics.evidence", &t.evidence),
        ];
        for (path, name) in names {
            if !valid_topic(name) {
                push(path, format!("{name:?}: 1-249 of A-Z a-z 0-9 . _ -"));
            }
        }
        let distinct: std::collections::BTreeSet<&String> = names.iter().map(|n| n.1).collect();
        if distinct.len() != names.len() {
            push("fleet.topics", "the topics must differ".into());
        }
        if self.group_id.is_empty() {
            push("fleet.group_id", "must not be empty".into());
        }
        if !(1..=10_000).contains(&self.partitions) {
            push("fleet.partitions", "must be from 1 to 10000".into());
        }
        if !(1..=32).contains(&self.replication) {
            push("fleet.replication", "must be from 1 to 32".into());
        }
        let sig = self.signals_retention_hours;
        if !(sig.is_finite() && (1.0..=8_760.0).contains(&sig)) {
            push(
                "fleet.signals_retention_hours",
                "must be from 1 to 8760 hours".into(),
            );
        }
        let ret = self.segment_retention_mins;
        if !(ret.is_finite() && (1.0..=10_080.0).contains(&ret)) {
            push(
                "fleet.segment_retention_mins",
                "must be from 1 to 10080 minutes".into(),
            );
        }
        if !(1024..=(100 << 20)).contains(&self.max_message_bytes) {
            push(
                "fleet.max_message_bytes",
                "must be from 1024 to 104857600".into(),
            );
        }
        let session = self.session_timeout_secs;
        if !(session.is_finite() && (1.0..=300.0).contains(&session)) {
            push(
                "fleet.session_timeout_secs",
                "must be from 1 to 300 seconds".into(),
            );
        }
        let every = self.checkpoint_secs;
        if !(every.is_finite() && (0.1..=60.0).contains(&every)) {
            push(
                "fleet.checkpoint_secs",
                "must be from 0.1 to 60 seconds".into(),
            );
        }
        if !["cooperative-sticky", "range", "roundrobin"].contains(&self.assignment.as_str()) {
            push(
                "fleet.assignment",
                format!(
                    "{:?}: expected \"cooperative-sticky\", \"range\" or \"roundrobin\"",
                    self.assignment
                ),
            );
        }
        for key in self.properties.keys() {
            if !FLEET_PROPERTY_PREFIXES.iter().any(|p| key.starts_with(p)) {
                push(
                    &format!("fleet.properties.{key}"),
                    "only security.*, sasl.* and ssl.* properties may be set here".into(),
                );
            }
        }
        if !out.is_empty() {
            return Err(out);
        }
        Ok(firebreak_delivery::fleet::FleetConfig {
            brokers: self.brokers.clone(),
            streams_topic: t.streams.clone(),
            segments_topic: t.segments.clone(),
            state_topic: t.stream_state.clone(),
            group_id: self.group_id.clone(),
            partitions: self.partitions as i32,
            replication: self.replication as i32,
            segment_retention_ms: (ret * 60_000.0) as u64,
            max_message_bytes: self.max_message_bytes,
            session_timeout_ms: (session * 1000.0) as u32,
            assignment: self.assignment.clone(),
            checkpoint_every: Duration::from_secs_f64(every),
            properties: self.properties.clone(),
            worker_id: String::new(),
        })
    }
}

/// `[server]`.
#[derive(Debug, Clone, Deserialize)]
#[serde(default)]
pub struct Server {
    /// Listen address.
    pub listen: String,
    /// Largest request body (a pushed segment), bytes.
    pub max_body_bytes: usize,
    /// At most this many streams at once.
    pub max_streams: usize,
    /// At most this many running streams per tenant (default: `max_streams`), so one
    /// tenant cannot take every slot. In fleet mode the count is fleet-wide.
    pub max_streams_per_tenant: Option<usize>,
    /// Open connections at most; one more is closed at once.
    pub max_connections: usize,
    /// Seconds a client has to send a request's headers (after connecting, or after
    /// the previous answer on a kept-alive connection).
    pub header_timeout_secs: f64,
    /// Seconds a client has to send a request's whole body (408 after).
    pub body_timeout_secs: f64,
    /// Authenticated requests per second per tenant, sustained (429 beyond).
    pub tenant_requests_per_sec: f64,
    /// Requests a tenant may make in a burst above the sustained rate.
    pub tenant_request_burst: u32,
    /// Failed authentications per minute from one client address before that address
    /// is answered 429 for a minute without checking.
    pub auth_failures_per_minute: u32,
    /// Bytes of request bodies held in memory at once (each reserved at its length
    /// before it is read; 503 beyond). At least `max_body_bytes`.
    pub max_inflight_body_bytes: usize,
    /// Serve `/metrics` on this address only (an internal listener, no credentials);
    /// when unset, `/metrics` on the main listener needs a credential with the `read`
    /// or `metrics` scope.
    pub metrics_listen: Option<String>,
    /// HTTPS on the main listener (for deployments without a terminating proxy); the
    /// certificate is reloaded on SIGHUP.
    pub tls: Option<TlsFiles>,
}

/// `[server.tls]`: PEM files.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(default)]
pub struct TlsFiles {
    /// Certificate chain, leaf first.
    pub cert: PathBuf,
    /// Private key (PKCS#8, PKCS#1 or SEC1).
    pub key: PathBuf,
}

impl Default for Server {
    fn default() -> Self {
        Server {
            listen: "127.0.0.1:8080".into(),
            max_body_bytes: 16 << 20,
            max_streams: 64,
            max_streams_per_tenant: None,
            max_connections: 1024,
            header_timeout_secs: 10.0,
            body_timeout_secs: 60.0,
            tenant_requests_per_sec: 200.0,
            tenant_request_burst: 400,
            auth_failures_per_minute: 30,
            max_inflight_body_bytes: 256 << 20,
            metrics_listen: None,
            tls: None,
        }
    }
}

/// `[log]`.
#[derive(Debug, Clone, Deserialize)]
#[serde(default)]
pub struct Log {
    /// `text` or `json`.
    pub format: String,
    /// A tracing filter (`info`, `firebreak=debug,warn`); `FIREBREAK_LOG` overrides.
    pub level: String,
}

impl Default for Log {
    fn default() -> Self {
        Log {
            format: "text".into(),
            level: "info".into(),
        }
    }
}

/// `[auth]`.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(default)]
pub struct Auth {
    /// Bearer tokens.
    pub tokens: Vec<TokenSpec>,
    /// HMAC-signed requests.
    pub hmac: Vec<HmacSpec>,
}

/// `[[auth.tokens]]`: only the token's sha256 is stored (the file is not a secret).
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(default)]
pub struct TokenSpec {
    /// Who holds it (audit logs name it).
    pub tenant: String,
    /// Lowercase hex sha256 of the token.
    pub token_sha256: String,
    /// `ingest`, `operator`, `read`.
    pub scopes: Vec<String>,
}

/// `[[auth.hmac]]`.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(default)]
pub struct HmacSpec {
    /// The tenant, sent in `X-Firebreak-Tenant`.
    pub tenant: String,
    /// Environment variable holding the secret.
    pub secret_env: String,
    /// Scopes; default `ingest`.
    pub scopes: Option<Vec<String>>,
}

/// The scopes a credential can carry, as written in the file.
pub const SCOPES: [&str; 5] = ["ingest", "operator", "read", "admin", "metrics"];

/// A scope a credential carries: `ingest` (push and register streams), `operator`
/// (acknowledge, resolve, audit; implies `read`), `admin` (policy, reload, every
/// tenant; implies `operator`), `read` (implies `metrics`), `metrics` (`/metrics` only).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Scope {
    /// Push and register streams.
    Ingest,
    /// Acknowledge and resolve escalations, read the audit log.
    Operator,
    /// Read streams, escalations, events and the policy.
    Read,
    /// Change the policy, reload, see every tenant.
    Admin,
    /// `/metrics` only.
    Metrics,
}

impl Scope {
    /// Every scope, in the order of [`SCOPES`].
    pub const ALL: [Scope; 5] = [
        Scope::Ingest,
        Scope::Operator,
        Scope::Read,
        Scope::Admin,
        Scope::Metrics,
    ];

    /// The name in the config file.
    pub fn as_str(self) -> &'static str {
        match self {
            Scope::Ingest => "ingest",
            Scope::Operator => "operator",
            Scope::Read => "read",
            Scope::Admin => "admin",
            Scope::Metrics => "metrics",
        }
    }

    /// The scope named `name`.
    pub fn parse(name: &str) -> Option<Scope> {
        Scope::ALL.into_iter().find(|s| s.as_str() == name)
    }
}

impl std::fmt::Display for Scope {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

/// `[ingest]`.
#[derive(Debug, Clone, Deserialize)]
#[serde(default)]
pub struct Ingest {
    /// `every`, `keyframes`, or `N/s` (N frames per second of media time).
    pub sampling: String,
    /// Segments held while waiting for a missing one.
    pub reorder_window: u64,
    /// Frames larger than this are scaled down before the detectors.
    pub max_frame: [u32; 2],
    /// Streams registered through the API may reach only public addresses, and these
    /// hosts or CIDR ranges (`"origin.internal"`, `"10.20.0.0/16"`): platform origins
    /// often sit on private addresses. Streams in this file are trusted.
    pub source_allowlist: Vec<String>,
    /// A pushed stream with no segment for this many seconds is ended (as if its end
    /// had been posted).
    pub idle_timeout_secs: f64,
    /// A frame timestamp more than this many seconds ahead of the previous frame's is
    /// a jump (reset like a discontinuity); smaller forward gaps are kept as they are.
    pub max_pts_step_secs: f64,
    /// A pushed stream's decoder waits for its detectors while it is less than this
    /// many seconds behind the arrival of the bytes it decodes (a burst is analysed in
    /// full); later, the oldest sampled frame gives way (dropped, `queue_full`).
    pub max_lag_secs: f64,
    /// After streams end, the allocator's free pages go back to the system at most
    /// this often (0: on every once-a-second pass, streams ended or not).
    pub heap_trim_secs: f64,
}

impl Default for Ingest {
    fn default() -> Self {
        Ingest {
            sampling: "2/s".into(),
            reorder_window: 8,
            max_frame: [1280, 720],
            source_allowlist: Vec::new(),
            idle_timeout_secs: 60.0,
            max_pts_step_secs: 60.0,
            max_lag_secs: 10.0,
            heap_trim_secs: 10.0,
        }
    }
}

/// `[detectors]`.
#[derive(Debug, Clone, Deserialize)]
#[serde(default)]
pub struct Detectors {
    /// Hash banks (`*.fbank`); default `<data_dir>/banks`.
    pub banks_dir: Option<PathBuf>,
    /// Model directories (each with a `model.toml`).
    pub models: Vec<PathBuf>,
    /// Classify every Nth sampled frame.
    pub classify_every: u32,
    /// Threads per inference.
    pub classifier_threads: usize,
    /// Media seconds in the live vPDQ window.
    pub video_window_secs: f64,
    /// Query-side views of each frame, per bank (`[detectors.views]`).
    pub views: crate::engine::views::ViewsConfig,
    /// Frames the live vPDQ window holds at most, whatever their times.
    pub video_window_max_frames: usize,
    /// How the matcher snapshot beside the banks is used: `"read"` (into memory),
    /// `"map"` (memory-mapped, shared between processes), `"off"` (always rebuild).
    pub bank_snapshot: String,
}

impl Default for Detectors {
    fn default() -> Self {
        Detectors {
            banks_dir: None,
            models: Vec::new(),
            classify_every: 1,
            classifier_threads: 1,
            video_window_secs: 10.0,
            views: Default::default(),
            video_window_max_frames: firebreak_matching::window::DEFAULT_MAX_FRAMES,
            bank_snapshot: "read".into(),
        }
    }
}

/// `[policy]`.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(default)]
pub struct PolicySection {
    /// A policy TOML file; default the built-in policy.
    pub file: Option<PathBuf>,
}

/// `[sink]`.
#[derive(Debug, Clone, Deserialize)]
#[serde(default)]
pub struct Sink {
    /// `jsonl` or `kafka`.
    pub kind: String,
    /// JSONL file; default `<data_dir>/events.jsonl`.
    pub path: Option<PathBuf>,
    /// Kafka bootstrap servers.
    pub brokers: Option<String>,
    /// Kafka topic.
    pub topic: Option<String>,
    /// Extra librdkafka properties (SASL, TLS...).
    pub properties: BTreeMap<String, String>,
}

impl Default for Sink {
    fn default() -> Self {
        Sink {
            kind: "jsonl".into(),
            path: None,
            brokers: None,
            topic: None,
            properties: BTreeMap::new(),
        }
    }
}

/// `[outbox]`.
#[derive(Debug, Clone, Deserialize)]
#[serde(default)]
pub struct Outbox {
    /// Refuse new events (with an alarm) beyond this many pending bytes.
    pub max_bytes: u64,
    /// Refuse new events (with an alarm) beyond this many pending events.
    pub max_records: usize,
}

impl Default for Outbox {
    fn default() -> Self {
        Outbox {
            max_bytes: 1 << 30,
            max_records: 1_000_000,
        }
    }
}

/// `[incidents]`.
#[derive(Debug, Clone, Deserialize)]
#[serde(default)]
pub struct Incidents {
    /// Incidents kept at most while some are resolved (the oldest resolved is dropped
    /// first; open ones are never dropped).
    pub max_kept: usize,
}

impl Default for Incidents {
    fn default() -> Self {
        Incidents {
            max_kept: crate::engine::incidents::KEPT,
        }
    }
}

/// `[[streams]]`: one of `hls`, `url`, `file`.
#[derive(Debug, Clone, Default, Deserialize, serde::Serialize)]
#[serde(default)]
pub struct StreamSpec {
    /// Stream id.
    pub id: String,
    /// An HLS playlist URL.
    pub hls: Option<String>,
    /// Anything FFmpeg opens (rtmp://, srt://, http://).
    pub url: Option<String>,
    /// A local file.
    pub file: Option<PathBuf>,
    /// Overrides `[ingest] sampling`.
    pub sampling: Option<String>,
    /// The tenant the stream belongs to (default: the first token's tenant, or
    /// `local`). Through the API it is the credential's tenant.
    pub tenant: Option<String>,
}

/// Parses a sampling setting.
pub fn parse_sampling(s: &str) -> Result<Sampling, String> {
    match s {
        "every" => Ok(Sampling::Every),
        "keyframes" => Ok(Sampling::Keyframes),
        other => {
            let n = other
                .strip_suffix("/s")
                .and_then(|n| n.trim().parse::<f64>().ok())
                .filter(|n| n.is_finite() && *n > 0.0 && *n <= 120.0);
            n.map(Sampling::PerSecond).ok_or_else(|| {
                format!("{other:?}: expected \"every\", \"keyframes\" or \"N/s\" (0 < N <= 120)")
            })
        }
    }
}

/// Checks a stream id (used in URLs, Kafka keys and file names).
pub fn valid_stream_id(id: &str) -> bool {
    !id.is_empty()
        && id.len() <= 128
        && id
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'-' | b'_' | b'.'))
}

/// Where a stream's video comes from.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum StreamSource {
    /// An HLS playlist URL.
    Hls(String),
    /// Anything FFmpeg opens (rtmp://, srt://, http://).
    Url(String),
    /// A local file.
    File(PathBuf),
}

/// A valid stream spec: one source, a valid id, sampling parsed.
#[derive(Debug, Clone, PartialEq)]
pub struct StreamSettings {
    /// Stream id (checked by [`valid_stream_id`]).
    pub id: String,
    /// Where the video comes from.
    pub source: StreamSource,
    /// Overrides the default sampling.
    pub sampling: Option<Sampling>,
    /// The owning tenant, if the spec names one.
    pub tenant: Option<String>,
}

impl StreamSpec {
    /// The typed stream, or every problem with it (paths under `at`).
    pub fn validate(&self, at: &str) -> Result<StreamSettings, Vec<Issue>> {
        let mut out = Vec::new();
        if !valid_stream_id(&self.id) {
            out.push(Issue::new(
                format!("{at}.id"),
                format!("{:?}: 1-128 of A-Z a-z 0-9 - _ .", self.id),
            ));
        }
        let source = match (&self.hls, &self.url, &self.file) {
            (Some(hls), None, None) => Some(StreamSource::Hls(hls.clone())),
            (None, Some(url), None) => Some(StreamSource::Url(url.clone())),
            (None, None, Some(file)) => Some(StreamSource::File(file.clone())),
            _ => {
                out.push(Issue::new(at, "give exactly one source: hls, url or file"));
                None
            }
        };
        let sampling = match self.sampling.as_deref().map(parse_sampling) {
            None => None,
            Some(Ok(s)) => Some(s),
            Some(Err(e)) => {
                out.push(Issue::new(format!("{at}.sampling"), e));
                None
            }
        };
        match source {
            Some(source) if out.is_empty() => Ok(StreamSettings {
                id: self.id.clone(),
                source,
                sampling,
                tenant: self.tenant.clone(),
            }),
            _ => Err(out),
        }
    }
}

/// The validated configuration: what [`ServiceConfig::parse`] and
/// [`ServiceConfig::load`] return and what the daemon is built from.
#[derive(Debug, Clone)]
pub struct Settings {
    /// Banks, outbox, JSONL events, audit log (`data_dir`, else `$FIREBREAK_DATA`,
    /// else `./firebreak-data`).
    pub data_dir: PathBuf,
    /// Names this worker in events; `None`: the host name.
    pub worker_id: Option<String>,
    /// HTTP.
    pub server: ServerSettings,
    /// Logging.
    pub log: LogSettings,
    /// Credentials.
    pub auth: AuthSettings,
    /// Defaults for every stream.
    pub ingest: IngestSettings,
    /// Banks and models.
    pub detectors: DetectorSettings,
    /// The escalation policy, loaded and validated.
    pub policy: PolicySettings,
    /// Where escalations go.
    pub sink: SinkSettings,
    /// The durable outbox in front of the sink.
    pub outbox: OutboxSettings,
    /// Incidents kept at most while some are resolved (1 to 10,000,000).
    pub max_incidents: usize,
    /// Streams pulled from the start.
    pub streams: Vec<StreamSettings>,
    /// Fleet mode (`None`: one process). Its `worker_id` is empty here: the daemon
    /// fills it in.
    pub fleet: Option<firebreak_delivery::fleet::FleetConfig>,
    /// Fleet mode's shared topics: banks and policy (read by every worker), signals
    /// (written by every worker).
    pub fleet_shared: Option<FleetShared>,
    /// The file this was loaded from (SIGHUP reads it again).
    pub source: Option<PathBuf>,
    /// The file's model (paths resolved), validated again by [`Settings::reread`]
    /// when there is no file.
    raw: ServiceConfig,
}

/// `[server]`, typed.
#[derive(Debug, Clone)]
pub struct ServerSettings {
    /// Listen address.
    pub listen: SocketAddr,
    /// Largest request body (a pushed segment), bytes.
    pub max_body_bytes: usize,
    /// At most this many streams at once.
    pub max_streams: usize,
    /// At most this many running streams per tenant.
    pub max_streams_per_tenant: usize,
    /// Open connections at most.
    pub max_connections: usize,
    /// Time a client has to send a request's headers.
    pub header_timeout: Duration,
    /// Time a client has to send a request's whole body.
    pub body_timeout: Duration,
    /// Authenticated requests per second per tenant, sustained.
    pub tenant_requests_per_sec: f64,
    /// Burst above the sustained rate.
    pub tenant_request_burst: u32,
    /// Failed authentications per minute per client address before a throttle.
    pub auth_failures_per_minute: u32,
    /// Bytes of request bodies held in memory at once.
    pub max_inflight_body_bytes: usize,
    /// The internal metrics listener, if any.
    pub metrics_listen: Option<SocketAddr>,
    /// HTTPS on the main listener.
    pub tls: Option<TlsSettings>,
}

/// `[server.tls]`: the files and the acceptor loaded from them.
#[derive(Clone)]
pub struct TlsSettings {
    /// Certificate chain, leaf first.
    pub cert: PathBuf,
    /// Private key.
    pub key: PathBuf,
    /// The certificate and key, loaded.
    pub acceptor: tokio_rustls::TlsAcceptor,
}

impl std::fmt::Debug for TlsSettings {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("TlsSettings")
            .field("cert", &self.cert)
            .field("key", &self.key)
            .finish_non_exhaustive()
    }
}

/// How log lines are written.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum LogFormat {
    /// Human-readable lines.
    Text,
    /// One JSON object per line.
    Json,
}

/// `[log]`, typed.
#[derive(Debug, Clone)]
pub struct LogSettings {
    /// Line format.
    pub format: LogFormat,
    /// A tracing filter, checked to parse (`tracing_subscriber::EnvFilter` is not
    /// `Clone`, so it is built where it is installed).
    pub level: String,
}

/// `[auth]`, typed.
#[derive(Debug, Clone, Default)]
pub struct AuthSettings {
    /// Bearer tokens.
    pub tokens: Vec<TokenSettings>,
    /// HMAC keys (their secrets are read from the environment when installed).
    pub hmac: Vec<HmacSettings>,
}

/// A bearer token: its sha256 and what it may do.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TokenSettings {
    /// Who holds it.
    pub tenant: String,
    /// The token's sha256.
    pub sha256: [u8; 32],
    /// At least one.
    pub scopes: Vec<Scope>,
}

/// An HMAC key.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct HmacSettings {
    /// The tenant.
    pub tenant: String,
    /// Environment variable holding the secret.
    pub secret_env: String,
    /// At least one (default `ingest`).
    pub scopes: Vec<Scope>,
}

/// `[ingest]`, typed.
#[derive(Debug, Clone)]
pub struct IngestSettings {
    /// Default sampling.
    pub sampling: Sampling,
    /// Segments held while waiting for a missing one.
    pub reorder_window: u64,
    /// Frames are scaled down to fit (width, height), both above 0.
    pub max_frame: (u32, u32),
    /// Where streams registered through the API may connect.
    pub net: Arc<NetPolicy>,
    /// A pushed stream with no segment for this long is ended.
    pub idle_timeout: Duration,
    /// A timestamp more than this ahead of the previous frame's is a jump.
    pub max_pts_step: Duration,
    /// How far behind the bytes' arrival a pushed stream's decoder waits for its
    /// detectors before frames give way.
    pub max_lag: Duration,
    /// The heap is trimmed at most this often after streams end (zero: every pass).
    pub heap_trim: Duration,
}

/// `[detectors]`, typed.
#[derive(Debug, Clone)]
pub struct DetectorSettings {
    /// Hash banks.
    pub banks_dir: PathBuf,
    /// Model directories, each with a `model.toml`.
    pub models: Vec<PathBuf>,
    /// Classify every Nth sampled frame (N above 0).
    pub classify_every: u32,
    /// Threads per inference.
    pub classifier_threads: usize,
    /// Media seconds in the live vPDQ window (above 0; media time, not a wall
    /// duration, and may be infinite).
    pub video_window_secs: f64,
    /// Query-side views, per bank.
    pub views: crate::engine::views::ViewsConfig,
    /// Frames the live vPDQ window holds at most (1 to 65536).
    pub video_window_max_frames: usize,
    /// How the matcher snapshot is loaded; `None`: never used or written.
    pub bank_snapshot: Option<firebreak_matching::mapfile::LoadMode>,
}

/// `[policy]`, typed.
#[derive(Debug, Clone)]
pub struct PolicySettings {
    /// The policy file, if any (reloads read it again).
    pub file: Option<PathBuf>,
    /// The policy: the file's, validated, or the built-in one.
    pub config: PolicyConfig,
}

/// `[sink]`, typed.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum SinkSettings {
    /// Appended to a JSONL file.
    Jsonl {
        /// The file (default `<data_dir>/events.jsonl`).
        path: PathBuf,
    },
    /// Produced to Kafka.
    Kafka {
        /// Bootstrap servers.
        brokers: String,
        /// Topic.
        topic: String,
        /// Extra librdkafka properties.
        properties: BTreeMap<String, String>,
    },
}

/// `[outbox]`, typed.
#[derive(Debug, Clone, Copy)]
pub struct OutboxSettings {
    /// Refuse new events beyond this many pending bytes (at least 65536).
    pub max_bytes: u64,
    /// Refuse new events beyond this many pending events (at least 1).
    pub max_records: usize,
}

impl Settings {
    /// `[signals]`: the local signal log.
    pub fn signals(&self) -> &crate::signals::log::SignalLogConfig {
        &self.raw.signals
    }

    /// `[coordinator]`.
    pub fn coordinator(&self) -> &Coordinator {
        &self.raw.coordinator
    }

    /// `[evidence]`.
    pub fn evidence(&self) -> &crate::evidence::EvidenceConfig {
        &self.raw.evidence
    }

    /// Where evidence thumbnails are kept (`None`: they are not).
    pub fn evidence_dir(&self) -> Option<PathBuf> {
        let e = self.evidence();
        e.enabled.then(|| {
            e.dir
                .clone()
                .unwrap_or_else(|| self.data_dir.join("evidence"))
        })
    }
}

impl ServerSettings {
    /// The connection limits of the accept loop.
    pub fn limits(&self) -> crate::http::server::Limits {
        crate::http::server::Limits {
            max_connections: self.max_connections,
            header_timeout: self.header_timeout,
            body_timeout: self.body_timeout,
        }
    }

    /// The request limits of the authenticator.
    pub fn rate_limits(&self) -> crate::http::auth::RateLimits {
        crate::http::auth::RateLimits {
            tenant_per_sec: self.tenant_requests_per_sec,
            tenant_burst: self.tenant_request_burst,
            auth_failures_per_minute: self.auth_failures_per_minute,
            inflight_body_bytes: self.max_inflight_body_bytes,
        }
    }
}

impl Settings {
    /// The configuration again, for a reload: the file it was loaded from, or (parsed
    /// from text) the same text, with the policy file and the certificate read again.
    pub fn reread(&self) -> Result<Settings, Vec<Issue>> {
        match &self.source {
            Some(path) => ServiceConfig::load(path),
            None => self.raw.clone().validate(),
        }
    }

    /// The tenant of streams that name none: the first token's, or `local`.
    pub fn default_tenant(&self) -> String {
        self.auth
            .tokens
            .first()
            .map_or_else(|| "local".into(), |t| t.tenant.clone())
    }
}

/// `secs` as a duration if it is from `lo` to `hi` seconds, else the error to report.
fn seconds_within(secs: f64, lo: f64, hi: f64) -> Result<Duration, String> {
    if secs.is_finite() && (lo..=hi).contains(&secs) {
        Ok(Duration::from_secs_f64(secs))
    } else {
        Err(format!("must be from {lo} to {hi} seconds"))
    }
}

impl ServiceConfig {
    /// Parses `text`; every problem is returned at once. `base` resolves relative paths
    /// (the config file's directory).
    pub fn parse(text: &str, base: &Path) -> Result<Settings, Vec<Issue>> {
        let mut unknown = Vec::new();
        let de = toml::Deserializer::parse(text)
            .map_err(|e| vec![Issue::new("(file)", e.to_string().trim())])?;
        let parsed: Result<ServiceConfig, _> = serde_ignored::deserialize(de, |path| {
            // An optional section's path reads `fleet?.topics.x`: shown as written.
            unknown.push(Issue::new(
                path.to_string().replace('?', "").replace("..", "."),
                "unknown field",
            ))
        });
        let mut config = match parsed {
            Ok(c) => c,
            Err(e) => {
                unknown.push(Issue::new("(file)", e.to_string().trim()));
                return Err(unknown);
            }
        };
        config.resolve(base);
        match config.validate() {
            Ok(settings) if unknown.is_empty() => Ok(settings),
            Ok(_) => Err(unknown),
            Err(issues) => {
                unknown.extend(issues);
                Err(unknown)
            }
        }
    }

    /// Reads and parses a file.
    pub fn load(path: &Path) -> Result<Settings, Vec<Issue>> {
        let text = std::fs::read_to_string(path)
            .map_err(|e| vec![Issue::new(path.display().to_string(), e.to_string())])?;
        let base = path.parent().unwrap_or(Path::new("."));
        let mut settings = Self::parse(&text, base)?;
        settings.source = Some(path.to_owned());
        Ok(settings)
    }

    fn resolve(&mut self, base: &Path) {
        let abs = |p: &mut PathBuf| {
            if p.is_relative() {
                *p = base.join(&*p);
            }
        };
        if let Some(d) = self.data_dir.as_mut() {
            abs(d);
        }
        if let Some(d) = self.detectors.banks_dir.as_mut() {
            abs(d);
        }
        if let Some(d) = self.signals.dir.as_mut() {
            abs(d);
        }
        self.signals.shadow.iter_mut().for_each(abs);
        self.detectors.models.iter_mut().for_each(abs);
        if let Some(f) = self.policy.file.as_mut() {
            abs(f);
        }
        if let Some(f) = self.sink.path.as_mut() {
            abs(f);
        }
        if let Some(t) = self.server.tls.as_mut() {
            abs(&mut t.cert);
            abs(&mut t.key);
        }
        for s in &mut self.streams {
            if let Some(f) = s.file.as_mut() {
                abs(f);
            }
        }
    }

    /// Where data lives.
    pub fn data_dir(&self) -> PathBuf {
        self.data_dir.clone().unwrap_or_else(|| {
            std::env::var_os("FIREBREAK_DATA")
                .map(PathBuf::from)
                .unwrap_or_else(|| PathBuf::from("firebreak-data"))
        })
    }

    /// The policy: the file's, or the built-in one.
    fn load_policy(&self) -> Result<PolicyConfig, Vec<Issue>> {
        let Some(file) = &self.policy.file else {
            return Ok(PolicyConfig::builtin());
        };
        let text = std::fs::read_to_string(file).map_err(|e| {
            vec![Issue::new(
                "policy.file",
                format!("{}: {e}", file.display()),
            )]
        })?;
        policy_from_toml(&text, "policy.file")
    }

    /// The typed settings, or every semantic problem (paths relative to the file's
    /// directory must have been resolved).
    pub fn validate(self) -> Result<Settings, Vec<Issue>> {
        let mut out = Vec::new();
        let mut push = |path: &str, message: String| out.push(Issue::new(path, message));
        let server = &self.server;
        let listen = server.listen.parse::<SocketAddr>().ok();
        if listen.is_none() {
            push(
                "server.listen",
                format!("{:?} is not an address like 127.0.0.1:8080", server.listen),
            );
        }
        if server.max_body_bytes == 0 {
            push("server.max_body_bytes", "must be above 0".into());
        }
        if server.max_streams_per_tenant == Some(0) {
            push("server.max_streams_per_tenant", "must be above 0".into());
        }
        if server.max_streams == 0 {
            push("server.max_streams", "must be above 0".into());
        }
        if server.max_connections == 0 {
            push("server.max_connections", "must be above 0".into());
        }
        let positive = |key: &str, v: f64, push: &mut dyn FnMut(&str, String)| {
            let ok = v.is_finite() && v > 0.0 && v <= 1e6;
            if !ok {
                push(key, format!("{v}: must be above 0 (and at most 1e6)"));
            }
            ok.then_some(v)
        };
        let header_timeout = positive(
            "server.header_timeout_secs",
            server.header_timeout_secs,
            &mut push,
        )
        .map(Duration::from_secs_f64);
        let body_timeout = positive(
            "server.body_timeout_secs",
            server.body_timeout_secs,
            &mut push,
        )
        .map(Duration::from_secs_f64);
        let tenant_requests_per_sec = positive(
            "server.tenant_requests_per_sec",
            server.tenant_requests_per_sec,
            &mut push,
        );
        if server.tenant_request_burst == 0 {
            push("server.tenant_request_burst", "must be above 0".into());
        }
        if server.max_inflight_body_bytes < server.max_body_bytes {
            push(
                "server.max_inflight_body_bytes",
                format!(
                    "{} is below server.max_body_bytes ({}): no body of the largest size could be read",
                    server.max_inflight_body_bytes, server.max_body_bytes
                ),
            );
        }
        if server.auth_failures_per_minute == 0 {
            push("server.auth_failures_per_minute", "must be above 0".into());
        }
        let metrics_listen = match &server.metrics_listen {
            None => Some(None),
            Some(m) => match m.parse::<SocketAddr>() {
                Ok(a) => Some(Some(a)),
                Err(_) => {
                    push(
                        "server.metrics_listen",
                        format!("{m:?} is not an address like 127.0.0.1:9090"),
                    );
                    None
                }
            },
        };
        let tls = match &server.tls {
            None => Some(None),
            Some(t) => match crate::http::server::load_tls(&t.cert, &t.key) {
                Ok(acceptor) => Some(Some(TlsSettings {
                    cert: t.cert.clone(),
                    key: t.key.clone(),
                    acceptor,
                })),
                Err(e) => {
                    push("server.tls", e);
                    None
                }
            },
        };
        let bank_snapshot = match self.detectors.bank_snapshot.as_str() {
            "read" => Some(Some(firebreak_matching::mapfile::LoadMode::Read)),
            "map" => Some(Some(firebreak_matching::mapfile::LoadMode::Map)),
            "off" => Some(None),
            other => {
                push(
                    "detectors.bank_snapshot",
                    format!("{other:?}: expected \"read\", \"map\" or \"off\""),
                );
                None
            }
        };
        let log_format = match self.log.format.as_str() {
            "text" => Some(LogFormat::Text),
            "json" => Some(LogFormat::Json),
            _ => {
                push(
                    "log.format",
                    format!("{:?}: expected \"text\" or \"json\"", self.log.format),
                );
                None
            }
        };
        if tracing_subscriber::EnvFilter::try_new(&self.log.level).is_err() {
            push(
                "log.level",
                format!("{:?} is not a log filter", self.log.level),
            );
        }
        let scopes_of = |at: &str, scopes: &[String], push: &mut dyn FnMut(&str, String)| {
            if scopes.is_empty() {
                push(&format!("{at}.scopes"), "give at least one scope".into());
            }
            let mut typed = Vec::new();
            for (j, s) in scopes.iter().enumerate() {
                match Scope::parse(s) {
                    Some(scope) => typed.push(scope),
                    None => push(
                        &format!("{at}.scopes[{j}]"),
                        format!("{s:?}: expected one of {SCOPES:?}"),
                    ),
                }
            }
            typed
        };
        let mut seen = HashSet::new();
        let mut tokens = Vec::new();
        for (i, t) in self.auth.tokens.iter().enumerate() {
            let at = format!("auth.tokens[{i}]");
            if t.tenant.is_empty() {
                push(&format!("{at}.tenant"), "missing".into());
            }
            let sha256 = sha256_from_hex(&t.token_sha256);
            match sha256 {
                None => push(
                    &format!("{at}.token_sha256"),
                    "expected 64 hex digits (printf %s TOKEN | sha256sum)".into(),
                ),
                Some(h) if !seen.insert(h) => {
                    push(&format!("{at}.token_sha256"), "the same token twice".into())
                }
                Some(_) => {}
            }
            let scopes = scopes_of(&at, &t.scopes, &mut push);
            if let Some(sha256) = sha256 {
                tokens.push(TokenSettings {
                    tenant: t.tenant.clone(),
                    sha256,
                    scopes,
                });
            }
        }
        let mut hmac = Vec::new();
        for (i, h) in self.auth.hmac.iter().enumerate() {
            let at = format!("auth.hmac[{i}]");
            if h.tenant.is_empty() {
                push(&format!("{at}.tenant"), "missing".into());
            }
            if h.secret_env.is_empty() {
                push(&format!("{at}.secret_env"), "missing".into());
            }
            let scopes = match &h.scopes {
                Some(scopes) => scopes_of(&at, scopes, &mut push),
                None => vec![Scope::Ingest],
            };
            hmac.push(HmacSettings {
                tenant: h.tenant.clone(),
                secret_env: h.secret_env.clone(),
                scopes,
            });
        }
        let sampling = parse_sampling(&self.ingest.sampling)
            .map_err(|e| push("ingest.sampling", e))
            .ok();
        let net = NetPolicy::new(&self.ingest.source_allowlist)
            .map_err(|bad| {
                push(
                    "ingest.source_allowlist",
                    format!("{bad:?}: expected host names, addresses or CIDR ranges"),
                )
            })
            .ok();
        let idle_timeout = seconds_within(self.ingest.idle_timeout_secs, 1.0, 86_400.0)
            .map_err(|e| push("ingest.idle_timeout_secs", e))
            .ok();
        let max_pts_step = seconds_within(self.ingest.max_pts_step_secs, 0.1, 86_400.0)
            .unwrap_or_else(|e| {
                push("ingest.max_pts_step_secs", e);
                Duration::from_secs(60)
            });
        let max_lag = seconds_within(self.ingest.max_lag_secs, 0.1, 3_600.0).unwrap_or_else(|e| {
            push("ingest.max_lag_secs", e);
            Duration::from_secs(10)
        });
        let heap_trim =
            seconds_within(self.ingest.heap_trim_secs, 0.0, 3_600.0).unwrap_or_else(|e| {
                push("ingest.heap_trim_secs", e);
                Duration::from_secs(10)
            });
        if !(1..=65_536).contains(&self.detectors.video_window_max_frames) {
            push(
                "detectors.video_window_max_frames",
                "must be from 1 to 65536".into(),
            );
        }
        if self.outbox.max_records == 0 {
            push("outbox.max_records", "must be at least 1".into());
        }
        if !(1..=10_000_000).contains(&self.incidents.max_kept) {
            push("incidents.max_kept", "must be from 1 to 10000000".into());
        }
        if self.ingest.max_frame.contains(&0) {
            push("ingest.max_frame", "must be above 0".into());
        }
        for (i, m) in self.detectors.models.iter().enumerate() {
            if !m.join("model.toml").is_file() {
                push(
                    &format!("detectors.models[{i}]"),
                    format!("{}: no model.toml there", m.display()),
                );
            }
        }
        for (path, message) in self.detectors.views.issues() {
            push(&path, message);
        }
        if self.detectors.classify_every == 0 {
            push("detectors.classify_every", "must be above 0".into());
        }
        if self.detectors.video_window_secs.is_nan() || self.detectors.video_window_secs <= 0.0 {
            push("detectors.video_window_secs", "must be above 0".into());
        }
        let data_dir = self.data_dir();
        let sink = &self.sink;
        let sink = match sink.kind.as_str() {
            "jsonl" => Some(SinkSettings::Jsonl {
                path: sink
                    .path
                    .clone()
                    .unwrap_or_else(|| data_dir.join("events.jsonl")),
            }),
            "kafka" => {
                let given = |v: &Option<String>| v.clone().filter(|v| !v.is_empty());
                let (brokers, topic) = (given(&sink.brokers), given(&sink.topic));
                if brokers.is_none() {
                    push("sink.brokers", "needed for the kafka sink".into());
                }
                if topic.is_none() {
                    push("sink.topic", "needed for the kafka sink".into());
                }
                brokers
                    .zip(topic)
                    .map(|(brokers, topic)| SinkSettings::Kafka {
                        brokers,
                        topic,
                        properties: sink.properties.clone(),
                    })
            }
            other => {
                push(
                    "sink.kind",
                    format!("{other:?}: expected \"jsonl\" or \"kafka\""),
                );
                None
            }
        };
        if self.outbox.max_bytes < 1 << 16 {
            push("outbox.max_bytes", "must be at least 65536".into());
        }
        for i in self.signals.validate() {
            push(&i.path, i.message);
        }
        let mut ids = HashSet::new();
        let mut streams = Vec::new();
        for (i, s) in self.streams.iter().enumerate() {
            let at = format!("streams[{i}]");
            match s.validate(&at) {
                Ok(stream) => streams.push(stream),
                Err(issues) => out.extend(issues),
            }
            if !ids.insert(s.id.clone()) {
                out.push(Issue::new(
                    format!("{at}.id"),
                    format!("{:?} given twice", s.id),
                ));
            }
        }
        let policy = self.load_policy().map_err(|issues| out.extend(issues)).ok();
        self.coordinator.validate(&mut out);
        out.extend(self.evidence.validate());
        let fleet_shared = self.fleet.as_ref().map(|f| FleetShared {
            feeds: crate::engine::feeds::FeedSettings {
                matcher_snapshot: !matches!(bank_snapshot, Some(None)),
                ..f.feeds()
            },
            signals_topic: f.topics.signals.clone(),
            signals_retention_ms: (f.signals_retention_hours * 3_600_000.0) as u64,
            evidence_topic: f.topics.evidence.clone(),
        });
        let fleet = match &self.fleet {
            None => None,
            Some(f) => match f.validate() {
                Ok(f) => Some(f),
                Err(issues) => {
                    out.extend(issues);
                    None
                }
            },
        };
        let (
            Some(listen),
            Some(header_timeout),
            Some(body_timeout),
            Some(tenant_requests_per_sec),
            Some(metrics_listen),
            Some(tls),
            Some(format),
            Some(sampling),
            Some(net),
            Some(idle_timeout),
            Some(sink),
            Some(policy),
        ) = (
            listen,
            header_timeout,
            body_timeout,
            tenant_requests_per_sec,
            metrics_listen,
            tls,
            log_format,
            sampling,
            net,
            idle_timeout,
            sink,
            policy,
        )
        else {
            return Err(out);
        };
        if !out.is_empty() {
            return Err(out);
        }
        let server = &self.server;
        Ok(Settings {
            worker_id: self.worker_id.clone(),
            server: ServerSettings {
                listen,
                max_body_bytes: server.max_body_bytes,
                max_streams: server.max_streams,
                max_streams_per_tenant: server.max_streams_per_tenant.unwrap_or(server.max_streams),
                max_connections: server.max_connections,
                header_timeout,
                body_timeout,
                tenant_requests_per_sec,
                tenant_request_burst: server.tenant_request_burst,
                max_inflight_body_bytes: server.max_inflight_body_bytes,
                auth_failures_per_minute: server.auth_failures_per_minute,
                metrics_listen,
                tls,
            },
            log: LogSettings {
                format,
                level: self.log.level.clone(),
            },
            auth: AuthSettings { tokens, hmac },
            ingest: IngestSettings {
                sampling,
                reorder_window: self.ingest.reorder_window,
                max_frame: (self.ingest.max_frame[0], self.ingest.max_frame[1]),
                net: Arc::new(net),
                idle_timeout,
                max_pts_step,
                max_lag,
                heap_trim,
            },
            detectors: DetectorSettings {
                banks_dir: self
                    .detectors
                    .banks_dir
                    .clone()
                    .unwrap_or_else(|| data_dir.join("banks")),
                models: self.detectors.models.clone(),
                classify_every: self.detectors.classify_every,
                classifier_threads: self.detectors.classifier_threads,
                video_window_secs: self.detectors.video_window_secs,
                views: self.detectors.views.clone(),
                video_window_max_frames: self.detectors.video_window_max_frames,
                bank_snapshot: bank_snapshot.expect("checked above"),
            },
            policy: PolicySettings {
                file: self.policy.file.clone(),
                config: policy,
            },
            sink,
            outbox: OutboxSettings {
                max_bytes: self.outbox.max_bytes,
                max_records: self.outbox.max_records,
            },
            max_incidents: self.incidents.max_kept,
            streams,
            fleet,
            fleet_shared,
            data_dir,
            source: None,
            raw: self,
        })
    }
}

/// 64 hex digits (either case) as 32 bytes.
fn sha256_from_hex(h: &str) -> Option<[u8; 32]> {
    if h.len() != 64 || !h.bytes().all(|b| b.is_ascii_hexdigit()) {
        return None;
    }
    let mut out = [0u8; 32];
    for (i, byte) in out.iter_mut().enumerate() {
        *byte = u8::from_str_radix(&h[2 * i..2 * i + 2], 16).ok()?;
    }
    Some(out)
}

/// Parses a policy, with issue paths under `at`.
pub fn policy_from_toml(text: &str, at: &str) -> Result<PolicyConfig, Vec<Issue>> {
    use firebreak_policy::config::PolicyError;
    PolicyConfig::from_toml(text).map_err(|e| match e {
        PolicyError::Invalid(issues) => issues.into_iter().map(|i| i.within(at)).collect(),
        other => vec![Issue::new(at, other.to_string())],
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_empty_file_is_the_embedded_setup() {
        let c = ServiceConfig::parse("data_dir = \"d\"", Path::new("/etc")).unwrap();
        assert_eq!(
            c.sink,
            SinkSettings::Jsonl {
                path: "/etc/d/events.jsonl".into()
            }
        );
        assert_eq!(c.server.listen, "127.0.0.1:8080".parse().unwrap());
        assert_eq!(c.server.header_timeout, Duration::from_secs(10));
        assert_eq!(c.ingest.sampling, Sampling::PerSecond(2.0));
        assert_eq!(c.log.format, LogFormat::Text);
        assert_eq!(c.detectors.banks_dir, Path::new("/etc/d/banks"));
        assert_eq!(c.policy.config, PolicyConfig::builtin());
        assert!(c.auth.tokens.is_empty() && c.streams.is_empty());
    }

    #[test]
    fn every_problem_is_reported_with_its_path() {
        let text = r#"
bogus = 1
[server]
listen = "nowhere"
colour = "red"
[[auth.tokens]]
tenant = "a"
token_sha256 = "abc"
scopes = ["ingest", "root"]
[sink]
kind = "kafka"
[[streams]]
id = "bad id"
hls = "http://x/y.m3u8"
file = "a.ts"
sampling = "fast"
"#;
        let issues = ServiceConfig::parse(text, Path::new("/tmp")).unwrap_err();
        let paths: Vec<&str> = issues.iter().map(|i| i.path.as_str()).collect();
        for want in [
            "bogus",
            "server.colour",
            "server.listen",
            "auth.tokens[0].token_sha256",
            "auth.tokens[0].scopes[1]",
            "sink.brokers",
            "sink.topic",
            "streams[0].id",
            "streams[0]",
            "streams[0].sampling",
        ] {
            assert!(paths.contains(&want), "{want} missing from {paths:?}");
        }
    }

    #[test]
    fn ingest_durations_out_of_range_are_reported_with_their_range() {
        let text = "[ingest]\nidle_timeout_secs = 0.5\nmax_pts_step_secs = nan\nheap_trim_secs = 3601\nmax_lag_secs = 0\n";
        let issues = ServiceConfig::parse(text, Path::new("/tmp")).unwrap_err();
        let found: Vec<(&str, String)> = issues
            .iter()
            .map(|i| (i.path.as_str(), i.message.clone()))
            .collect();
        for want in [
            (
                "ingest.idle_timeout_secs",
                "must be from 1 to 86400 seconds",
            ),
            (
                "ingest.max_pts_step_secs",
                "must be from 0.1 to 86400 seconds",
            ),
            ("ingest.heap_trim_secs", "must be from 0 to 3600 seconds"),
            ("ingest.max_lag_secs", "must be from 0.1 to 3600 seconds"),
        ] {
            assert!(
                found.contains(&(want.0, want.1.to_owned())),
                "{want:?} missing from {found:?}"
            );
        }
        let ok = "[ingest]\nheap_trim_secs = 0\nmax_pts_step_secs = 0.1\nmax_lag_secs = 600\n";
        let c = ServiceConfig::parse(ok, Path::new("/tmp")).unwrap();
        assert_eq!(c.ingest.heap_trim, Duration::ZERO);
        assert_eq!(c.ingest.max_pts_step, Duration::from_millis(100));
        assert_eq!(c.ingest.max_lag, Duration::from_secs(600));
        let default = ServiceConfig::parse("", Path::new("/tmp")).unwrap();
        assert_eq!(default.ingest.max_lag, Duration::from_secs(10));
    }

    #[test]
    fn a_valid_file_becomes_typed_settings() {
        let text = r#"
[server]
listen = "0.0.0.0:9000"
metrics_listen = "127.0.0.1:9100"
body_timeout_secs = 2.5
max_streams = 5
[log]
format = "json"
[[auth.tokens]]
tenant = "a"
token_sha256 = "00FF00ff00ff00ff00ff00ff00ff00ff00ff00ff00ff00ff00ff00ff00ff00ff"
scopes = ["ingest", "admin"]
[[auth.hmac]]
tenant = "p"
secret_env = "P_SECRET"
[ingest]
sampling = "keyframes"
source_allowlist = ["10.0.0.0/8"]
idle_timeout_secs = 30
[sink]
kind = "kafka"
brokers = "k:9092"
topic = "t"
properties = { "acks" = "all" }
[[streams]]
id = "cam"
file = "cam.ts"
sampling = "every"
"#;
        let c = ServiceConfig::parse(text, Path::new("/srv")).unwrap();
        assert_eq!(c.server.listen, SocketAddr::from(([0, 0, 0, 0], 9000)));
        assert_eq!(
            c.server.metrics_listen,
            Some(SocketAddr::from(([127, 0, 0, 1], 9100)))
        );
        assert_eq!(c.server.body_timeout, Duration::from_millis(2500));
        assert_eq!(
            c.server.max_streams_per_tenant, 5,
            "defaults to max_streams"
        );
        assert_eq!(c.log.format, LogFormat::Json);
        let mut sha = [0u8; 32];
        for (i, b) in sha.iter_mut().enumerate() {
            *b = if i % 2 == 0 { 0 } else { 0xff };
        }
        assert_eq!(
            c.auth.tokens,
            vec![TokenSettings {
                tenant: "a".into(),
                sha256: sha,
                scopes: vec![Scope::Ingest, Scope::Admin],
            }]
        );
        assert_eq!(c.auth.hmac[0].scopes, vec![Scope::Ingest], "the default");
        assert_eq!(c.ingest.sampling, Sampling::Keyframes);
        assert_eq!(
            *c.ingest.net,
            NetPolicy::new(&["10.0.0.0/8".to_owned()]).unwrap()
        );
        assert_eq!(c.ingest.idle_timeout, Duration::from_secs(30));
        assert_eq!(
            c.sink,
            SinkSettings::Kafka {
                brokers: "k:9092".into(),
                topic: "t".into(),
                properties: [("acks".to_owned(), "all".to_owned())].into(),
            }
        );
        assert_eq!(
            c.streams,
            vec![StreamSettings {
                id: "cam".into(),
                source: StreamSource::File("/srv/cam.ts".into()),
                sampling: Some(Sampling::Every),
                tenant: None,
            }]
        );
        assert_eq!(c.default_tenant(), "a");
    }

    #[test]
    fn the_scope_names_are_the_documented_ones() {
        assert_eq!(Scope::ALL.map(Scope::as_str), SCOPES);
        assert_eq!(Scope::parse("operator"), Some(Scope::Operator));
        assert_eq!(Scope::parse("root"), None);
    }

    #[test]
    fn a_policy_file_s_issues_keep_their_path_inside_the_file() {
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(dir.path().join("p.toml"), "version = \"\"\ntiers = [\"a\"]\n[[rule]]\nname = \"r\"\nkind = \"hash_match\"\ntier = \"a\"\n").unwrap();
        let issues = ServiceConfig::parse("[policy]\nfile = \"p.toml\"\n", dir.path()).unwrap_err();
        assert_eq!(
            issues,
            vec![Issue::new("policy.file: version", "must not be empty")]
        );
    }

    /// `[detectors] bank_snapshot`: read by default, map or off when asked, anything
    /// else refused with its path.
    #[test]
    fn bank_snapshot_modes() {
        use firebreak_matching::mapfile::LoadMode;
        let mode = |text: &str| {
            ServiceConfig::parse(text, Path::new("/tmp"))
                .unwrap()
                .detectors
                .bank_snapshot
        };
        assert_eq!(mode(""), Some(LoadMode::Read));
        assert_eq!(
            mode("[detectors]\nbank_snapshot = \"read\"\n"),
            Some(LoadMode::Read)
        );
        assert_eq!(
            mode("[detectors]\nbank_snapshot = \"map\"\n"),
            Some(LoadMode::Map)
        );
        assert_eq!(mode("[detectors]\nbank_snapshot = \"off\"\n"), None);
        let issues =
            ServiceConfig::parse("[detectors]\nbank_snapshot = \"mmap\"\n", Path::new("/tmp"))
                .unwrap_err();
        assert_eq!(
            issues,
            vec![Issue::new(
                "detectors.bank_snapshot",
                "\"mmap\": expected \"read\", \"map\" or \"off\""
            )]
        );
    }

    /// The PTS jump threshold, the live window's frame cap and the outbox's event
    /// limit: defaults (60 s, 1024, one million), values taken, bad values refused.
    #[test]
    fn jump_threshold_window_cap_and_outbox_records() {
        let c = ServiceConfig::parse("", Path::new("/tmp")).unwrap();
        assert_eq!(c.ingest.max_pts_step, Duration::from_secs(60));
        assert_eq!(c.detectors.video_window_max_frames, 1024);
        assert_eq!(c.outbox.max_records, 1_000_000);
        let text = "[ingest]\nmax_pts_step_secs = 2.5\n[detectors]\nvideo_window_max_frames = 64\n[outbox]\nmax_records = 10\n";
        let c = ServiceConfig::parse(text, Path::new("/tmp")).unwrap();
        assert_eq!(c.ingest.max_pts_step, Duration::from_millis(2500));
        assert_eq!(c.detectors.video_window_max_frames, 64);
        assert_eq!(c.outbox.max_records, 10);
        for (text, path) in [
            (
                "[ingest]\nmax_pts_step_secs = 0.0\n",
                "ingest.max_pts_step_secs",
            ),
            (
                "[ingest]\nmax_pts_step_secs = nan\n",
                "ingest.max_pts_step_secs",
            ),
            (
                "[detectors]\nvideo_window_max_frames = 0\n",
                "detectors.video_window_max_frames",
            ),
            (
                "[detectors]\nvideo_window_max_frames = 65537\n",
                "detectors.video_window_max_frames",
            ),
            ("[outbox]\nmax_records = 0\n", "outbox.max_records"),
        ] {
            let issues = ServiceConfig::parse(text, Path::new("/tmp")).unwrap_err();
            assert_eq!(
                issues.iter().map(|i| i.path.as_str()).collect::<Vec<_>>(),
                [path],
                "{text}"
            );
        }
    }

    #[test]
    fn without_a_fleet_section_there_is_no_fleet() {
        let c = ServiceConfig::parse("", Path::new("/etc")).unwrap();
        assert!(c.fleet.is_none());
    }

    #[test]
    fn a_fleet_section_becomes_typed_settings_with_defaults() {
        let text = r#"
[fleet]
brokers = "k1:9092,k2:9092"
partitions = 8
session_timeout_secs = 6
properties = { "security.protocol" = "SASL_SSL", "sasl.mechanism" = "PLAIN" }
[fleet.topics]
segments = "fb.seg"
"#;
        let c = ServiceConfig::parse(text, Path::new("/etc")).unwrap();
        let f = c.fleet.unwrap();
        assert_eq!(f.brokers, "k1:9092,k2:9092");
        assert_eq!(
            (
                f.streams_topic.as_str(),
                f.segments_topic.as_str(),
                f.state_topic.as_str()
            ),
            ("firebreak.streams", "fb.seg", "firebreak.stream-state")
        );
        assert_eq!(f.group_id, "firebreak-workers");
        assert_eq!(f.partitions, 8);
        assert_eq!(f.session_timeout_ms, 6000);
        assert_eq!(f.assignment, "cooperative-sticky");
        assert_eq!(f.segment_retention_ms, 30 * 60_000);
        assert_eq!(f.checkpoint_every, Duration::from_secs(1));
        assert_eq!(f.properties.len(), 2);
        let shared = c.fleet_shared.unwrap();
        assert_eq!(
            (
                shared.feeds.banks_topic.as_str(),
                shared.feeds.policy_topic.as_str(),
                shared.signals_topic.as_str()
            ),
            ("firebreak.banks", "firebreak.policy", "firebreak.signals")
        );
        assert_eq!(shared.feeds.brokers, "k1:9092,k2:9092");
        assert_eq!(shared.feeds.partitions, 8);
        assert_eq!(shared.feeds.properties.len(), 2);
        assert_eq!(shared.signals_retention_ms, 24 * 3_600_000);
        assert!(shared.feeds.matcher_snapshot);
        // Without matcher snapshots, the bank feed writes none either.
        let off = format!("{text}[detectors]\nbank_snapshot = \"off\"\n");
        let c = ServiceConfig::parse(&off, Path::new("/etc")).unwrap();
        assert!(!c.fleet_shared.unwrap().feeds.matcher_snapshot);
    }

    #[test]
    fn every_fleet_problem_is_reported_with_its_path() {
        let text = r#"
[fleet]
partitions = 0
session_timeout_secs = 0
assignment = "sticky-ish"
max_message_bytes = 10
properties = { "bootstrap.servers" = "elsewhere:9092", "ssl.ca.location" = "/ca.pem" }
[fleet.topics]
streams = "bad topic"
segments = "firebreak.stream-state"
colour = "red"
signals = "firebreak.banks"
"#;
        let issues = ServiceConfig::parse(text, Path::new("/tmp")).unwrap_err();
        let paths: Vec<&str> = issues.iter().map(|i| i.path.as_str()).collect();
        for want in [
            "fleet.topics.colour",
            "fleet.brokers",
            "fleet.topics.streams",
            "fleet.topics",
            "fleet.partitions",
            "fleet.session_timeout_secs",
            "fleet.assignment",
            "fleet.max_message_bytes",
            "fleet.properties.bootstrap.servers",
        ] {
            assert!(paths.contains(&want), "{want} missing from {paths:?}");
        }
        assert!(
            !paths.contains(&"fleet.properties.ssl.ca.location"),
            "{paths:?}"
        );
    }

    #[test]
    fn sampling_forms() {
        assert_eq!(parse_sampling("every").unwrap(), Sampling::Every);
        assert_eq!(parse_sampling("keyframes").unwrap(), Sampling::Keyframes);
        assert_eq!(parse_sampling("2/s").unwrap(), Sampling::PerSecond(2.0));
        assert!(parse_sampling("0/s").is_err());
        assert!(parse_sampling("2").is_err());
    }
}

//! The daemon's configuration file (`firebreak run --config FILE`,
//! `firebreak config check FILE`).
//!
//! Every problem is reported at once with its path: unknown keys anywhere (collected
//! while parsing, not just the first), then every semantic issue (bad listen address,
//! bad token hash, unknown scope, missing model directory, an invalid policy file...).
//! Everything has a default such that an empty file runs the embedded setup: the
//! built-in policy, the JSONL sink, no external service.

use std::collections::{BTreeMap, HashSet};
use std::net::SocketAddr;
use std::path::{Path, PathBuf};

use firebreak_policy::config::PolicyConfig;
use serde::Deserialize;

/// One problem, with where it is.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Issue {
    /// Dotted path, e.g. `auth.tokens[1].scopes[0]`.
    pub path: String,
    /// What is wrong.
    pub message: String,
}

impl std::fmt::Display for Issue {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}: {}", self.path, self.message)
    }
}

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
    /// Streams pulled from the start (more can be registered through the API).
    pub streams: Vec<StreamSpec>,
    /// The file this was loaded from (SIGHUP reads it again).
    #[serde(skip)]
    pub source: Option<PathBuf>,
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
    /// tenant cannot take every slot.
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

/// The scopes a credential can carry.
pub const SCOPES: [&str; 5] = ["ingest", "operator", "read", "admin", "metrics"];

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
}

impl Default for Ingest {
    fn default() -> Self {
        Ingest {
            sampling: "2/s".into(),
            reorder_window: 8,
            max_frame: [1280, 720],
            source_allowlist: Vec::new(),
            idle_timeout_secs: 60.0,
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
}

impl Default for Detectors {
    fn default() -> Self {
        Detectors {
            banks_dir: None,
            models: Vec::new(),
            classify_every: 1,
            classifier_threads: 1,
            video_window_secs: 10.0,
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
}

impl Default for Outbox {
    fn default() -> Self {
        Outbox { max_bytes: 1 << 30 }
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
pub fn parse_sampling(s: &str) -> Result<firebreak_media::ingest::Sampling, String> {
    use firebreak_media::ingest::Sampling;
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

impl StreamSpec {
    /// Problems with this stream, paths under `at`.
    pub fn issues(&self, at: &str) -> Vec<Issue> {
        let mut out = Vec::new();
        let mut push = |path: String, message: String| out.push(Issue { path, message });
        if !valid_stream_id(&self.id) {
            push(
                format!("{at}.id"),
                format!("{:?}: 1-128 of A-Z a-z 0-9 - _ .", self.id),
            );
        }
        let sources = [self.hls.is_some(), self.url.is_some(), self.file.is_some()];
        if sources.iter().filter(|s| **s).count() != 1 {
            push(
                at.to_owned(),
                "give exactly one source: hls, url or file".into(),
            );
        }
        if let Some(s) = &self.sampling
            && let Err(e) = parse_sampling(s)
        {
            push(format!("{at}.sampling"), e);
        }
        out
    }
}

impl ServiceConfig {
    /// Parses `text`; every problem is returned at once. `base` resolves relative paths
    /// (the config file's directory).
    pub fn parse(text: &str, base: &Path) -> Result<ServiceConfig, Vec<Issue>> {
        let mut unknown = Vec::new();
        let de = toml::Deserializer::parse(text).map_err(|e| {
            vec![Issue {
                path: "(file)".into(),
                message: e.to_string().trim().to_owned(),
            }]
        })?;
        let parsed: Result<ServiceConfig, _> = serde_ignored::deserialize(de, |path| {
            unknown.push(Issue {
                path: path.to_string(),
                message: "unknown field".into(),
            })
        });
        let mut config = match parsed {
            Ok(c) => c,
            Err(e) => {
                unknown.push(Issue {
                    path: "(file)".into(),
                    message: e.to_string().trim().to_owned(),
                });
                return Err(unknown);
            }
        };
        config.resolve(base);
        let mut issues = unknown;
        issues.extend(config.validate());
        if issues.is_empty() {
            Ok(config)
        } else {
            Err(issues)
        }
    }

    /// Reads and parses a file.
    pub fn load(path: &Path) -> Result<ServiceConfig, Vec<Issue>> {
        let text = std::fs::read_to_string(path).map_err(|e| {
            vec![Issue {
                path: path.display().to_string(),
                message: e.to_string(),
            }]
        })?;
        let base = path.parent().unwrap_or(Path::new("."));
        let mut config = Self::parse(&text, base)?;
        config.source = Some(path.to_owned());
        Ok(config)
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

    /// Where banks live.
    pub fn banks_dir(&self) -> PathBuf {
        self.detectors
            .banks_dir
            .clone()
            .unwrap_or_else(|| self.data_dir().join("banks"))
    }

    /// The policy: the file's, or the built-in one.
    pub fn load_policy(&self) -> Result<PolicyConfig, Vec<Issue>> {
        let Some(file) = &self.policy.file else {
            return Ok(PolicyConfig::builtin());
        };
        let text = std::fs::read_to_string(file).map_err(|e| {
            vec![Issue {
                path: "policy.file".into(),
                message: format!("{}: {e}", file.display()),
            }]
        })?;
        policy_from_toml(&text, "policy.file")
    }

    /// Every semantic problem.
    pub fn validate(&self) -> Vec<Issue> {
        let mut out = Vec::new();
        let mut push = |path: &str, message: String| {
            out.push(Issue {
                path: path.to_owned(),
                message,
            })
        };
        if self.server.listen.parse::<SocketAddr>().is_err() {
            push(
                "server.listen",
                format!(
                    "{:?} is not an address like 127.0.0.1:8080",
                    self.server.listen
                ),
            );
        }
        if self.server.max_body_bytes == 0 {
            push("server.max_body_bytes", "must be above 0".into());
        }
        if self.server.max_streams_per_tenant == Some(0) {
            push("server.max_streams_per_tenant", "must be above 0".into());
        }
        if self.server.max_streams == 0 {
            push("server.max_streams", "must be above 0".into());
        }
        if self.server.max_connections == 0 {
            push("server.max_connections", "must be above 0".into());
        }
        for (key, v) in [
            (
                "server.header_timeout_secs",
                self.server.header_timeout_secs,
            ),
            ("server.body_timeout_secs", self.server.body_timeout_secs),
            (
                "server.tenant_requests_per_sec",
                self.server.tenant_requests_per_sec,
            ),
        ] {
            if !(v.is_finite() && v > 0.0 && v <= 1e6) {
                push(key, format!("{v}: must be above 0 (and at most 1e6)"));
            }
        }
        if self.server.tenant_request_burst == 0 {
            push("server.tenant_request_burst", "must be above 0".into());
        }
        if self.server.max_inflight_body_bytes < self.server.max_body_bytes {
            push(
                "server.max_inflight_body_bytes",
                format!(
                    "{} is below server.max_body_bytes ({}): no body of the largest size could be read",
                    self.server.max_inflight_body_bytes, self.server.max_body_bytes
                ),
            );
        }
        if self.server.auth_failures_per_minute == 0 {
            push("server.auth_failures_per_minute", "must be above 0".into());
        }
        if let Some(m) = &self.server.metrics_listen
            && m.parse::<SocketAddr>().is_err()
        {
            push(
                "server.metrics_listen",
                format!("{m:?} is not an address like 127.0.0.1:9090"),
            );
        }
        if let Some(tls) = &self.server.tls
            && let Err(e) = crate::http::server::load_tls(&tls.cert, &tls.key)
        {
            push("server.tls", e);
        }
        if !matches!(self.log.format.as_str(), "text" | "json") {
            push(
                "log.format",
                format!("{:?}: expected \"text\" or \"json\"", self.log.format),
            );
        }
        if tracing_subscriber::EnvFilter::try_new(&self.log.level).is_err() {
            push(
                "log.level",
                format!("{:?} is not a log filter", self.log.level),
            );
        }
        let scope_issues = |at: &str, scopes: &[String], push: &mut dyn FnMut(&str, String)| {
            if scopes.is_empty() {
                push(&format!("{at}.scopes"), "give at least one scope".into());
            }
            for (j, s) in scopes.iter().enumerate() {
                if !SCOPES.contains(&s.as_str()) {
                    push(
                        &format!("{at}.scopes[{j}]"),
                        format!("{s:?}: expected one of {SCOPES:?}"),
                    );
                }
            }
        };
        let mut seen = HashSet::new();
        for (i, t) in self.auth.tokens.iter().enumerate() {
            let at = format!("auth.tokens[{i}]");
            if t.tenant.is_empty() {
                push(&format!("{at}.tenant"), "missing".into());
            }
            let h = &t.token_sha256;
            if h.len() != 64 || !h.bytes().all(|b| b.is_ascii_hexdigit()) {
                push(
                    &format!("{at}.token_sha256"),
                    "expected 64 hex digits (printf %s TOKEN | sha256sum)".into(),
                );
            } else if !seen.insert(h.to_ascii_lowercase()) {
                push(&format!("{at}.token_sha256"), "the same token twice".into());
            }
            scope_issues(&at, &t.scopes, &mut push);
        }
        for (i, h) in self.auth.hmac.iter().enumerate() {
            let at = format!("auth.hmac[{i}]");
            if h.tenant.is_empty() {
                push(&format!("{at}.tenant"), "missing".into());
            }
            if h.secret_env.is_empty() {
                push(&format!("{at}.secret_env"), "missing".into());
            }
            if let Some(scopes) = &h.scopes {
                scope_issues(&at, scopes, &mut push);
            }
        }
        if let Err(e) = parse_sampling(&self.ingest.sampling) {
            push("ingest.sampling", e);
        }
        if let Err(bad) =
            firebreak_media::ingest::guard::NetPolicy::new(&self.ingest.source_allowlist)
        {
            push(
                "ingest.source_allowlist",
                format!("{bad:?}: expected host names, addresses or CIDR ranges"),
            );
        }
        if !(self.ingest.idle_timeout_secs.is_finite()
            && (1.0..=86_400.0).contains(&self.ingest.idle_timeout_secs))
        {
            push(
                "ingest.idle_timeout_secs",
                "must be from 1 to 86400 seconds".into(),
            );
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
        if self.detectors.classify_every == 0 {
            push("detectors.classify_every", "must be above 0".into());
        }
        if self.detectors.video_window_secs.is_nan() || self.detectors.video_window_secs <= 0.0 {
            push("detectors.video_window_secs", "must be above 0".into());
        }
        match self.sink.kind.as_str() {
            "jsonl" => {}
            "kafka" => {
                if self.sink.brokers.as_deref().is_none_or(str::is_empty) {
                    push("sink.brokers", "needed for the kafka sink".into());
                }
                if self.sink.topic.as_deref().is_none_or(str::is_empty) {
                    push("sink.topic", "needed for the kafka sink".into());
                }
            }
            other => push(
                "sink.kind",
                format!("{other:?}: expected \"jsonl\" or \"kafka\""),
            ),
        }
        if self.outbox.max_bytes < 1 << 16 {
            push("outbox.max_bytes", "must be at least 65536".into());
        }
        let mut ids = HashSet::new();
        for (i, s) in self.streams.iter().enumerate() {
            let at = format!("streams[{i}]");
            out.extend(s.issues(&at));
            if !ids.insert(s.id.clone()) {
                out.push(Issue {
                    path: format!("{at}.id"),
                    message: format!("{:?} given twice", s.id),
                });
            }
        }
        if let Err(issues) = self.load_policy() {
            out.extend(issues);
        }
        out
    }
}

/// Parses a policy, with issue paths under `at`.
pub fn policy_from_toml(text: &str, at: &str) -> Result<PolicyConfig, Vec<Issue>> {
    use firebreak_policy::config::PolicyError;
    PolicyConfig::from_toml(text).map_err(|e| match e {
        PolicyError::Invalid(issues) => issues
            .into_iter()
            .map(|i| Issue {
                path: format!("{at}: {}", i.path),
                message: i.message,
            })
            .collect(),
        other => vec![Issue {
            path: at.to_owned(),
            message: other.to_string(),
        }],
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_empty_file_is_the_embedded_setup() {
        let c = ServiceConfig::parse("", Path::new("/etc")).unwrap();
        assert_eq!(c.sink.kind, "jsonl");
        assert_eq!(c.server.listen, "127.0.0.1:8080");
        assert!(c.auth.tokens.is_empty());
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
    fn sampling_forms() {
        use firebreak_media::ingest::Sampling;
        assert_eq!(parse_sampling("every").unwrap(), Sampling::Every);
        assert_eq!(parse_sampling("keyframes").unwrap(), Sampling::Keyframes);
        assert_eq!(parse_sampling("2/s").unwrap(), Sampling::PerSecond(2.0));
        assert!(parse_sampling("0/s").is_err());
        assert!(parse_sampling("2").is_err());
    }
}

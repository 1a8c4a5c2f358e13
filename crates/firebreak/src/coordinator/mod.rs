//! `firebreak coordinator`: the fleet's crisis coordinator.
//!
//! ```text
//! firebreak.escalations ─┐                          ┌─▶ HTTP: incidents, preview, actions
//! firebreak.signals ─────┼─▶ tail thread ─▶ Hub ────┤
//! firebreak.incidents ───┤   (every partition,      └─ confirm ─▶ firebreak.banks (crisis)
//! firebreak.policy ──────┘    no group)                reject  ─▶ firebreak.banks (negative)
//!        ▲                        │                    retract ─▶ tombstones
//!        │                        └─▶ signal log (copy) ─▶ dry-run ─┐
//!        ├──────────── action records (the log) ◀──── actions      │
//!        └──────────── policy versions ◀───────────── PUT/PATCH ◀───┘ (admin)
//! ```
//!
//! Every coordinator reads every partition of the three topics from the beginning, so
//! each holds every incident ([`hub::Hub`], folded from the topics). A responder's
//! action is written to `firebreak.incidents` (one partition: one order) and takes
//! effect when the coordinator reads it back, on every coordinator alike; its id is
//! deterministic, so two coordinators acting on the same state count once. A
//! confirmation publishes its bank entries (deterministic keys) before its record, so a
//! coordinator that dies in between leaves entries that a repeat writes again, never a
//! record without entries. State survives a restart: it is rebuilt from the topics.

pub mod api;
pub mod hub;
pub mod policy;

use std::net::SocketAddr;
use std::path::Path;
use std::process::ExitCode;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use anyhow::{Context, Result, anyhow};
use firebreak_delivery::compacted::{SharedConfig, Writer};
use firebreak_delivery::telemetry::Tail;

use crate::config::{ServiceConfig, Settings, SinkSettings};
use hub::{ActionRecord, Hub};

/// Retention of the escalations topic when the coordinator creates it (7 days): a
/// restarted coordinator rebuilds its incidents from what is left.
const ESCALATIONS_RETENTION_MS: u64 = 7 * 24 * 3_600_000;

/// The schema version header of action records.
pub const ACTION_SCHEMA: u32 = hub::ACTION_VERSION;

/// The coordinator's Prometheus metrics, brought up to date from the hub at each scrape.
#[derive(Debug)]
pub struct CoordinatorMetrics {
    registry: prometheus::Registry,
    read: prometheus::IntCounterVec,
    unreadable: prometheus::IntCounterVec,
    actions: prometheus::IntCounterVec,
    incidents: prometheus::IntGaugeVec,
    ready: prometheus::IntGauge,
    /// Records of `firebreak.signals` the coordinator's signal log dropped.
    log_drops: prometheus::IntCounter,
}

impl CoordinatorMetrics {
    fn new() -> CoordinatorMetrics {
        use prometheus::{IntCounterVec, IntGauge, IntGaugeVec, Opts};
        let registry = prometheus::Registry::new();
        let read = IntCounterVec::new(
            Opts::new(
                "firebreak_coordinator_records_total",
                "Records read from the fleet's topics, by kind (escalation, frame, action).",
            ),
            &["kind"],
        )
        .expect("valid");
        let unreadable = IntCounterVec::new(
            Opts::new(
                "firebreak_coordinator_unreadable_total",
                "Records that could not be read, by topic (escalations, signals).",
            ),
            &["topic"],
        )
        .expect("valid");
        let actions = IntCounterVec::new(
            Opts::new(
                "firebreak_coordinator_actions_total",
                "Responder actions read from the incident log, by outcome (applied, refused).",
            ),
            &["outcome"],
        )
        .expect("valid");
        let incidents = IntGaugeVec::new(
            Opts::new(
                "firebreak_coordinator_incidents",
                "Incidents held, by state.",
            ),
            &["state"],
        )
        .expect("valid");
        let ready = IntGauge::new(
            "firebreak_coordinator_ready",
            "1 once the topics were read to their end.",
        )
        .expect("valid");
        for c in [&read, &unreadable, &actions] {
            registry.register(Box::new(c.clone())).expect("unique");
        }
        registry
            .register(Box::new(incidents.clone()))
            .expect("unique");
        registry.register(Box::new(ready.clone())).expect("unique");
        let drops = crate::metrics::signal_drops_vec();
        registry.register(Box::new(drops.clone())).expect("unique");
        CoordinatorMetrics {
            registry,
            read,
            unreadable,
            actions,
            incidents,
            ready,
            log_drops: drops.with_label_values(&[crate::metrics::SignalSinkKind::Log.label()]),
        }
    }

    /// The exposition text for these figures.
    pub fn render(
        &self,
        counts: &hub::Counts,
        by_state: &std::collections::BTreeMap<firebreak_coordinator::incidents::State, i64>,
        ready: bool,
    ) -> String {
        use prometheus::Encoder;
        let up = |c: &prometheus::IntCounter, v: u64| c.inc_by(v.saturating_sub(c.get()));
        up(
            &self.read.with_label_values(&["escalation"]),
            counts.escalations,
        );
        up(&self.read.with_label_values(&["frame"]), counts.frames);
        up(
            &self.read.with_label_values(&["action"]),
            counts.actions + counts.refused_actions,
        );
        up(
            &self.unreadable.with_label_values(&["escalations"]),
            counts.bad_escalations,
        );
        up(
            &self.unreadable.with_label_values(&["signals"]),
            counts.bad_signals,
        );
        up(
            &self.actions.with_label_values(&["applied"]),
            counts.actions,
        );
        up(
            &self.actions.with_label_values(&["refused"]),
            counts.refused_actions,
        );
        use firebreak_coordinator::incidents::State;
        for s in [
            State::Open,
            State::Acknowledged,
            State::Confirmed,
            State::Rejected,
            State::Resolved,
        ] {
            let name = format!("{s:?}").to_lowercase();
            self.incidents
                .with_label_values(&[name.as_str()])
                .set(by_state.get(&s).copied().unwrap_or(0));
        }
        self.ready.set(i64::from(ready));
        let mut out = Vec::new();
        let _ = prometheus::TextEncoder::new().encode(&self.registry.gather(), &mut out);
        String::from_utf8(out).unwrap_or_default()
    }
}

/// The running coordinator.
#[derive(Debug)]
pub struct Coordinator {
    /// Its metrics.
    pub metrics: CoordinatorMetrics,
    /// The state, shared by the tail thread and the API.
    pub hub: Mutex<Hub>,
    /// Woken whenever the tail applied something.
    pub changed: tokio::sync::Notify,
    /// The topics have been read to their end once.
    pub ready: AtomicBool,
    /// With a webhook: set once the active/standby group placed this coordinator.
    pub joined: std::sync::OnceLock<Arc<AtomicBool>>,
    /// Writes bank entries.
    pub banks: Writer,
    /// Writes the action log.
    pub log: Writer,
    /// The crisis and negative banks.
    pub crisis_bank: String,
    /// The negative bank.
    pub negative_bank: String,
    /// Evidence thumbnails, copied from the evidence topic (`None`: not kept).
    pub evidence: Option<crate::evidence::EvidenceStore>,
    /// The fleet's policy: the latest record of `firebreak.policy` read, its writer,
    /// the policy's name there and the configured policy (in force until a record
    /// exists).
    pub policy: FleetPolicy,
    /// The fleet's signals, copied from `firebreak.signals` into a local signal log
    /// (rebuilt at each start) for dry-runs (`None`: `[signals] enabled = false`).
    pub signal_log: Option<Arc<crate::signals::log::SignalLog>>,
}

/// The fleet's policy as the coordinator sees it and changes it.
#[derive(Debug)]
pub struct FleetPolicy {
    /// The latest record of this policy on the topic.
    pub record: Mutex<Option<crate::engine::feeds::PolicyRecord>>,
    /// Writes the next version.
    pub writer: Writer,
    /// The policy's name (the record's key).
    pub name: String,
    /// The configured policy: active while the topic holds no version.
    pub configured: firebreak_policy::config::PolicyConfig,
    /// Recent dry-runs, for a change applied on one.
    pub dry_runs: crate::engine::versions::DryRuns,
}

impl FleetPolicy {
    /// The latest record read.
    pub fn record(&self) -> Option<crate::engine::feeds::PolicyRecord> {
        self.record
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .clone()
    }

    /// The active policy: the record's active version, else the configured policy.
    pub fn active(&self) -> Arc<firebreak_policy::policy::Policy> {
        let from_topic = self.record().and_then(|r| {
            let v = r.active_version()?;
            crate::config::policy_from_toml(&v.toml, "fleet").ok()
        });
        Arc::new(firebreak_policy::policy::Policy::new(
            from_topic.unwrap_or_else(|| self.configured.clone()),
        ))
    }

    /// Takes a record of the policy topic (key, value; an empty value is a
    /// tombstone, which changes nothing).
    fn on_record(&self, key: Option<&[u8]>, value: &[u8]) {
        if key != Some(self.name.as_bytes()) || value.is_empty() {
            return;
        }
        match serde_json::from_slice::<crate::engine::feeds::PolicyRecord>(value) {
            Ok(r) if r.name == self.name => {
                *self.record.lock().unwrap_or_else(|e| e.into_inner()) = Some(r);
            }
            Ok(_) => tracing::warn!("coordinator: a policy record names another policy"),
            Err(e) => tracing::warn!(error = %e, "coordinator: unreadable policy record"),
        }
    }
}

fn lock(m: &Mutex<Hub>) -> std::sync::MutexGuard<'_, Hub> {
    m.lock().unwrap_or_else(|e| e.into_inner())
}

impl Coordinator {
    /// Ready to serve: the topics were read once and, with a webhook, the active/standby
    /// group has placed this coordinator.
    pub fn is_ready(&self) -> bool {
        self.ready.load(Ordering::Acquire)
            && self.joined.get().is_none_or(|j| j.load(Ordering::Acquire))
    }

    /// The state, locked.
    pub fn hub(&self) -> std::sync::MutexGuard<'_, Hub> {
        lock(&self.hub)
    }
}

/// The topics a coordinator reads.
#[derive(Debug, Clone)]
struct Topics {
    escalations: String,
    signals: String,
    incidents: String,
    /// Evidence thumbnails (`None`: not kept here).
    evidence: Option<String>,
    /// Policy versions.
    policy: String,
}

/// The topics a coordinator reads.
fn topics(settings: &Settings) -> Result<Topics> {
    let shared = settings
        .fleet_shared
        .as_ref()
        .ok_or_else(|| anyhow!("the coordinator needs a [fleet] section (brokers, topics)"))?;
    let c = settings.coordinator();
    let escalations = c
        .escalations_topic
        .clone()
        .unwrap_or_else(|| match &settings.sink {
            SinkSettings::Kafka { topic, .. } => topic.clone(),
            _ => "firebreak.escalations".into(),
        });
    Ok(Topics {
        escalations,
        signals: shared.signals_topic.clone(),
        incidents: c.incidents_topic.clone(),
        evidence: settings
            .evidence()
            .enabled
            .then(|| shared.evidence_topic.clone()),
        policy: shared.feeds.policy_topic.clone(),
    })
}

/// What the active coordinator tells a webhook about a new incident.
fn opened_event(inc: &firebreak_coordinator::incidents::Incident) -> serde_json::Value {
    serde_json::json!({
        "type": "org.firebreak.incident.v1",
        "event": "opened",
        "incident": {
            "id": inc.id,
            "opened_ms": inc.opened_ms,
            "spread": inc.spread,
            "max_tier": inc.max_tier,
            "activation": inc.activation,
            "streams": inc.streams.keys().map(ToString::to_string).collect::<Vec<_>>(),
            "rules": inc.rules,
        },
    })
}

/// Posts events to the webhook, in order, a few tries each (at least once: receivers
/// drop repeats by incident id).
fn webhook_loop(url: String, rx: std::sync::mpsc::Receiver<serde_json::Value>) {
    let agent = ureq::AgentBuilder::new()
        .timeout(Duration::from_secs(5))
        .redirects(0)
        .build();
    for event in rx {
        let mut delay = Duration::from_millis(200);
        for attempt in 1..=4 {
            match agent.post(&url).send_json(&event) {
                Ok(_) => break,
                Err(e) => {
                    tracing::warn!(error = %e, attempt, "coordinator: webhook");
                    std::thread::sleep(delay);
                    delay *= 2;
                }
            }
        }
    }
}

/// The active/standby membership and the webhook queue, when a webhook is configured.
type Notify = (
    firebreak_delivery::telemetry::Leadership,
    std::sync::mpsc::Sender<serde_json::Value>,
);

/// Stores one record of the evidence topic (preserved at once if its incident is
/// confirmed already). Blocking file I/O, on the tail thread, outside the hub's lock.
fn store_evidence(coord: &Coordinator, store: &crate::evidence::EvidenceStore, payload: &[u8]) {
    let (meta, jpeg) = match crate::evidence::decode_record(payload) {
        Ok(x) => x,
        Err(e) => {
            tracing::warn!(error = %e, "coordinator: unreadable evidence record");
            return;
        }
    };
    if let Err(e) = store.put(&meta.tenant, &meta.id, jpeg) {
        tracing::warn!(error = %e, "coordinator: storing an evidence thumbnail");
        return;
    }
    if coord.hub().should_preserve(&meta.id) {
        preserve(store, [meta.id]);
    }
}

fn preserve(store: &crate::evidence::EvidenceStore, ids: impl IntoIterator<Item = String>) {
    let now = std::time::SystemTime::now();
    for id in ids {
        match store.preserve(&id, now) {
            Ok(true) => tracing::info!(thumbnail = %id, "coordinator: evidence preserved"),
            // Not here yet: preserved when it arrives (`should_preserve`).
            Ok(false) => {}
            Err(e) => {
                tracing::warn!(error = %e, thumbnail = %id, "coordinator: preserving evidence")
            }
        }
    }
}

/// The coordinator's copy of `firebreak.signals`: the log's segments are removed and
/// the log opened afresh, since the coordinator reads the topic from its start again
/// (labels stored beside it stay). Blocking.
fn open_fleet_log(
    dir: &Path,
    config: &crate::signals::log::SignalLogConfig,
    dropped: prometheus::IntCounter,
) -> Result<Arc<crate::signals::log::SignalLog>> {
    if dir.exists() {
        for segment in crate::signals::log::segments(dir)? {
            std::fs::remove_file(&segment)
                .with_context(|| format!("removing {}", segment.display()))?;
        }
    }
    Ok(crate::signals::log::SignalLog::open(dir, config, dropped)?)
}

/// Reads the topics into the hub until `stop`.
fn tail_loop(
    coord: Arc<Coordinator>,
    mut tail: Tail,
    names: Topics,
    stop: Arc<AtomicBool>,
    notify: Option<Notify>,
    evidence: crate::evidence::EvidenceConfig,
) {
    let Topics {
        escalations,
        signals,
        incidents,
        evidence: evidence_topic,
        policy,
    } = names;
    let mut idle_after_assign = false;
    let mut last_sweep = std::time::Instant::now();
    while !stop.load(Ordering::Acquire) {
        if let Some(store) = &coord.evidence
            && last_sweep.elapsed() >= Duration::from_secs(60)
        {
            last_sweep = std::time::Instant::now();
            match store.sweep(
                std::time::SystemTime::now(),
                evidence.retention(),
                evidence.preserve(),
            ) {
                Ok(0) => {}
                Ok(n) => {
                    tracing::info!(removed = n, "coordinator: evidence past retention removed")
                }
                Err(e) => tracing::warn!(error = %e, "coordinator: evidence retention sweep"),
            }
        }
        match tail.poll(Duration::from_millis(100)) {
            Some(Ok(r)) if evidence_topic.as_deref() == Some(r.topic.as_str()) => {
                if let Some(store) = &coord.evidence {
                    store_evidence(&coord, store, &r.payload);
                }
            }
            Some(Ok(r)) if r.topic == policy => {
                coord.policy.on_record(r.key.as_deref(), &r.payload);
            }
            Some(Ok(r)) => {
                // Signals are decoded outside the hub's lock, and copied to the local
                // log for dry-runs.
                let signal_records = (r.topic == signals).then(|| {
                    let decoded = crate::signals::record::decode_block(&r.payload);
                    if let (Ok(records), Some(log)) = (&decoded, &coord.signal_log) {
                        use crate::signals::SignalSink;
                        for rec in records {
                            log.record(rec.clone());
                        }
                    }
                    decoded
                });
                let mut hub = coord.hub();
                if let Some(decoded) = signal_records {
                    match decoded {
                        Ok(records) => hub.on_signal_records(records),
                        Err(e) => hub.unreadable_signals(&e),
                    }
                } else if r.topic == escalations {
                    if !r.payload.is_empty() {
                        hub.on_escalation(&r.payload);
                    }
                } else if r.topic == incidents {
                    match serde_json::from_slice::<ActionRecord>(&r.payload) {
                        Ok(a) => hub.on_action(a),
                        Err(e) => {
                            tracing::warn!(error = %e, offset = r.offset, "coordinator: unreadable action record")
                        }
                    }
                }
                // New incidents go to the webhook once caught up (not those rebuilt
                // from history), from the active coordinator only.
                let notices = hub.take_notices();
                if let Some((leader, tx)) = &notify
                    && coord.ready.load(Ordering::Acquire)
                    && leader.is_active()
                {
                    for n in notices {
                        let event = match n {
                            hub::Notice::Opened(id) => hub.incidents().get(&id).map(opened_event),
                            hub::Notice::Merged { into, from } => Some(serde_json::json!({
                                "type": "org.firebreak.incident.v1",
                                "event": "merged",
                                "into": into,
                                "from": from,
                            })),
                        };
                        if let Some(e) = event {
                            let _ = tx.send(e);
                        }
                    }
                }
                let newly = hub.take_preserve();
                drop(hub);
                if let Some(store) = &coord.evidence
                    && !newly.is_empty()
                {
                    preserve(store, newly);
                }
                coord.changed.notify_waiters();
            }
            Some(Err(e)) => tracing::warn!(error = %e, "coordinator: reading the topics"),
            None => {
                // Every topic found and nothing more to read: caught up once.
                if tail.all_assigned() {
                    if idle_after_assign && !coord.ready.swap(true, Ordering::AcqRel) {
                        tracing::info!("coordinator: caught up with the topics");
                    }
                    idle_after_assign = true;
                }
            }
        }
    }
}

/// `firebreak coordinator --config FILE`.
pub fn run(path: &Path) -> Result<ExitCode> {
    let settings = match ServiceConfig::load(path) {
        Ok(c) => c,
        Err(issues) => {
            for i in &issues {
                eprintln!("config: {i}");
            }
            return Ok(ExitCode::from(2));
        }
    };
    crate::daemon::init_tracing(&settings);
    let names = topics(&settings)?;
    let shared = settings.fleet_shared.as_ref().expect("checked by topics()");
    let kafka: SharedConfig = shared.feeds.shared();
    let c = settings.coordinator().clone();
    let tiers = settings.policy.config.tiers.clone();
    let evidence = settings.evidence().clone();
    let evidence_dir = settings.evidence_dir();
    let signal_log_config = settings.signals().clone();
    let data_dir = settings.data_dir.clone();
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()?;
    let listen: SocketAddr = settings.server.listen;
    runtime.block_on(async move {
        // The action log: one partition (one order of actions), compacted on unique
        // keys (nothing is ever compacted away).
        firebreak_delivery::compacted::ensure_topic(
            &kafka,
            &names.incidents,
            1,
            shared.feeds.replication,
        )
        .await
        .with_context(|| format!("creating {}", names.incidents))?;
        firebreak_delivery::compacted::ensure_topic(
            &kafka,
            &shared.feeds.banks_topic,
            shared.feeds.partitions,
            shared.feeds.replication,
        )
        .await
        .with_context(|| format!("creating {}", shared.feeds.banks_topic))?;
        // The topics it reads, so that it is ready before the first escalation: an
        // existing topic is left as it is (the workers create the signals topic alike).
        firebreak_delivery::telemetry::ensure_topic(
            &kafka,
            &names.escalations,
            shared.feeds.partitions,
            shared.feeds.replication,
            ESCALATIONS_RETENTION_MS,
        )
        .await
        .with_context(|| format!("creating {}", names.escalations))?;
        firebreak_delivery::telemetry::ensure_topic(
            &kafka,
            &names.signals,
            shared.feeds.partitions,
            shared.feeds.replication,
            shared.signals_retention_ms,
        )
        .await
        .with_context(|| format!("creating {}", names.signals))?;
        firebreak_delivery::compacted::ensure_topic(
            &kafka,
            &names.policy,
            shared.feeds.partitions,
            shared.feeds.replication,
        )
        .await
        .with_context(|| format!("creating {}", names.policy))?;
        if let Some(topic) = &names.evidence {
            firebreak_delivery::telemetry::ensure_topic(
                &kafka,
                topic,
                shared.feeds.partitions,
                shared.feeds.replication,
                evidence.retention().as_millis() as u64,
            )
            .await
            .with_context(|| format!("creating {topic}"))?;
        }
        let store = match &evidence_dir {
            None => None,
            Some(dir) => Some(
                crate::evidence::EvidenceStore::open(dir)
                    .with_context(|| format!("opening the evidence store in {}", dir.display()))?,
            ),
        };
        let metrics = CoordinatorMetrics::new();
        let signal_log = match signal_log_config.enabled {
            false => None,
            true => {
                let dir = signal_log_config
                    .dir
                    .clone()
                    .unwrap_or_else(|| data_dir.join("signals"));
                let dropped = metrics.log_drops.clone();
                Some(
                    tokio::task::spawn_blocking(move || {
                        open_fleet_log(&dir, &signal_log_config, dropped)
                            .with_context(|| format!("opening the signal log in {}", dir.display()))
                    })
                    .await??,
                )
            }
        };
        let coord = Arc::new(Coordinator {
            metrics,
            hub: Mutex::new(Hub::new(c.clone(), tiers)),
            changed: tokio::sync::Notify::new(),
            ready: AtomicBool::new(false),
            joined: std::sync::OnceLock::new(),
            banks: Writer::new(&kafka, &shared.feeds.banks_topic)?,
            log: Writer::new(&kafka, &names.incidents)?,
            crisis_bank: c.crisis_bank.clone(),
            negative_bank: c.negative_bank.clone(),
            evidence: store,
            policy: FleetPolicy {
                record: Mutex::new(None),
                writer: Writer::new(&kafka, &names.policy)?,
                name: shared.feeds.policy_name.clone(),
                configured: settings.policy.config.clone(),
                dry_runs: Default::default(),
            },
            signal_log,
        });
        let mut read: Vec<&str> = vec![
            &names.escalations,
            &names.signals,
            &names.incidents,
            &names.policy,
        ];
        if let Some(t) = &names.evidence {
            read.push(t);
        }
        let tail = Tail::open(&kafka, &read)?;
        let notify = match &c.webhook_url {
            None => None,
            Some(url) => {
                let session = settings
                    .fleet
                    .as_ref()
                    .map_or(Duration::from_secs(10), |f| {
                        Duration::from_millis(f.session_timeout_ms as u64)
                    });
                let leader = firebreak_delivery::telemetry::Leadership::join(
                    &kafka,
                    &names.incidents,
                    &c.group_id,
                    session,
                )?;
                let _ = coord.joined.set(leader.joined());
                let (tx, rx) = std::sync::mpsc::channel();
                let url = url.clone();
                std::thread::Builder::new()
                    .name("coordinator-webhook".into())
                    .spawn(move || webhook_loop(url, rx))?;
                Some((leader, tx))
            }
        };
        let stop = Arc::new(AtomicBool::new(false));
        let thread = {
            let (coord, stop) = (coord.clone(), stop.clone());
            std::thread::Builder::new()
                .name("coordinator-tail".into())
                .spawn(move || tail_loop(coord, tail, names, stop, notify, evidence))?
        };
        let (metrics, _) = crate::metrics::Metrics::new();
        let auth = Arc::new(
            crate::http::auth::Authenticator::new(
                &settings.auth,
                settings.server.max_body_bytes,
                settings.server.rate_limits(),
                metrics.clone(),
            )
            .map_err(|e| anyhow!(e))?,
        );
        let router = api::router(coord.clone(), auth);
        let listener = tokio::net::TcpListener::bind(listen)
            .await
            .with_context(|| format!("listening on {listen}"))?;
        let addr = listener.local_addr()?;
        {
            use std::io::Write;
            let mut out = std::io::stdout();
            let _ = writeln!(out, "listening on http://{addr}\ndashboard: http://{addr}/");
            let _ = out.flush();
        }
        tracing::info!(%addr, "firebreak coordinator running");
        let shutdown = crate::daemon::shutdown_signal()?;
        crate::http::server::serve(
            listener,
            router,
            settings.server.limits(),
            None,
            metrics,
            shutdown,
        )
        .await?;
        stop.store(true, Ordering::Release);
        let log = coord.signal_log.clone();
        let _ = tokio::task::spawn_blocking(move || {
            let _ = thread.join();
            if let Some(log) = log {
                log.close();
            }
        })
        .await;
        Ok::<_, anyhow::Error>(())
    })?;
    Ok(ExitCode::SUCCESS)
}

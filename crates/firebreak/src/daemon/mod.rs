//! `firebreak run`: the monitor as a service.
//!
//! [`Daemon::build`] loads the banks, the models and the policy, opens the outbox
//! (replaying what a previous run left undelivered), creates the sink and starts the
//! configured pulled streams; [`Daemon::serve`] serves the HTTP API, delivers the
//! outbox and ticks the engine once a second until told to stop, then drains. Tests
//! build and drive a daemon in-process, on an injected [`Clock`].
//!
//! [`run`] adds the process around it: config file, logging, signals. SIGHUP (or
//! `POST /v1/reload`) reloads the credentials, the TLS certificate, the Kafka sink's
//! brokers and properties, the policy file and the banks without touching the
//! streams; a bad file is reported and the old ones stay. SIGTERM stops intake, lets
//! every stream drain through the detectors, waits for the outbox to empty (up to
//! 20 s; anything left stays on disk for the next start) and exits.

use std::collections::HashSet;
use std::io::Write;
use std::path::Path;
use std::process::ExitCode;
use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::{Duration, Instant};

use anyhow::{Context, Result, anyhow};
use axum::Router;
use firebreak_classify::{Classifier, ClassifierSet};
use firebreak_delivery::kafka::{KafkaConfig, KafkaSink};
use firebreak_delivery::outbox::{Outbox, OutboxConfig};
use firebreak_delivery::{FileSync, JsonlSink, Pipeline, Syncer};
use firebreak_matching::matcher::MatchConfig;
use firebreak_matching::store::{BankStore, MatcherOptions, MatcherSource};
use firebreak_media::ingest::StreamState as MediaState;
use firebreak_policy::event::Producer;
use firebreak_policy::policy::StreamEvent;
use serde_json::{Value, json};

use crate::clock::{self, Clock};
use crate::config::{Issue, LogFormat, ServiceConfig, Settings, SinkSettings};
use crate::engine::{Detectors, Engine, EngineConfig, FrameModel};
use crate::http::api::{ApiState, ReloadResult, Reloader};
use crate::http::auth::{Authenticator, Denied};
use crate::http::ingest::{IngestConfig, IngestState};
use crate::http::server::Tls;
use crate::metrics::Metrics;

/// `firebreak config check FILE`.
pub fn check(path: &Path) -> ExitCode {
    match ServiceConfig::load(path) {
        Ok(_) => {
            println!("ok {}", path.display());
            ExitCode::SUCCESS
        }
        Err(issues) => {
            for i in &issues {
                eprintln!("{}: {i}", path.display());
            }
            ExitCode::from(2)
        }
    }
}

/// Loads banks and models (`frame_models` beside the configured ones).
fn load_detectors(
    config: &Settings,
    frame_models: &[Arc<dyn FrameModel>],
) -> Result<Detectors, Vec<Issue>> {
    let issue = |path: &str, message: String| Issue::new(path, message);
    let threads = std::thread::available_parallelism().map_or(1, |n| n.get());
    let started = std::time::Instant::now();
    let loaded = BankStore::new(config.detectors.banks_dir.clone())
        .load_matcher(MatcherOptions {
            config: MatchConfig::default(),
            threads,
            snapshot: config.detectors.bank_snapshot,
            save: true,
        })
        .map_err(|e| vec![issue("detectors.banks_dir", e.to_string())])?;
    for e in &loaded.skipped {
        tracing::error!(error = %e, "skipping unreadable bank");
    }
    let seconds = started.elapsed().as_secs_f64();
    match &loaded.source {
        MatcherSource::Snapshot => {
            tracing::info!(seconds, "matcher loaded from its snapshot");
        }
        MatcherSource::Built { why, saved } => {
            tracing::info!(
                seconds,
                snapshot = why.as_deref(),
                "matcher built from the banks"
            );
            if let Some(Err(e)) = saved {
                tracing::warn!(error = %e, "cannot write the matcher snapshot; the next start rebuilds");
            }
        }
    }
    let matcher = loaded.matcher;
    let mut models = Vec::new();
    let mut issues = Vec::new();
    for (i, dir) in config.detectors.models.iter().enumerate() {
        match Classifier::load(dir) {
            Ok(mut c) => {
                c.set_threads(config.detectors.classifier_threads);
                models.push(c);
            }
            Err(e) => issues.push(issue(&format!("detectors.models[{i}]"), e.to_string())),
        }
    }
    if !issues.is_empty() {
        return Err(issues);
    }
    let bank_sizes = loaded
        .banks
        .into_iter()
        .map(|b| (b.name, b.entries, b.negative))
        .collect();
    // The parsed entries (when built from the banks) were only needed to build the
    // matcher, and are several times its size: give their pages back now rather than at
    // the next periodic trim.
    if let Some(trim) = HEAP_TRIM.get() {
        trim();
    }
    Ok(Detectors {
        matcher,
        classifiers: ClassifierSet::new(models),
        frame_models: frame_models.to_vec(),
        banks: bank_sizes,
        views: crate::engine::views::QueryViews::new(config.detectors.views.clone()),
    })
}

/// Resolves on SIGTERM or Ctrl-C (must be called on the runtime).
pub(crate) fn shutdown_signal() -> Result<impl std::future::Future<Output = ()>> {
    let mut term = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate())
        .context("SIGTERM handler")?;
    Ok(async move {
        tokio::select! {
            _ = tokio::signal::ctrl_c() => {}
            _ = term.recv() => {}
        }
    })
}

pub(crate) fn init_tracing(config: &Settings) {
    let filter = tracing_subscriber::EnvFilter::try_from_env("FIREBREAK_LOG")
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new(&config.log.level));
    use std::io::IsTerminal;
    let builder = tracing_subscriber::fmt()
        .with_writer(std::io::stderr)
        .with_ansi(std::io::stderr().is_terminal())
        .with_env_filter(filter);
    let _ = match config.log.format {
        LogFormat::Json => builder.json().try_init(),
        LogFormat::Text => builder.try_init(),
    };
}

/// `policy` with this host's interface addresses as its own (refused to API sources);
/// if they cannot be listed, loopback and private ranges are still refused.
fn own_addresses(
    policy: firebreak_media::ingest::guard::NetPolicy,
) -> firebreak_media::ingest::guard::NetPolicy {
    match policy.clone().with_own_interfaces() {
        Ok(p) => p,
        Err(e) => {
            tracing::warn!(error = %e, "cannot list this host's addresses for the source policy");
            policy
        }
    }
}

/// Every issue on one line, for a start-up error.
fn joined(issues: Vec<Issue>) -> anyhow::Error {
    anyhow!(
        "{}",
        issues
            .iter()
            .map(ToString::to_string)
            .collect::<Vec<_>>()
            .join("; ")
    )
}

#[derive(Debug)]
enum AnySink {
    Jsonl(JsonlSink),
    /// Shared with the reloader, which gives it new credentials.
    Kafka(Arc<KafkaSink>),
}

/// The Kafka sink's settings from `[sink]` (`None` for another kind).
fn kafka_config(sink: &SinkSettings) -> Option<KafkaConfig> {
    match sink {
        SinkSettings::Kafka {
            brokers,
            topic,
            properties,
        } => {
            let mut k = KafkaConfig::new(brokers.clone(), topic.clone());
            k.properties = properties.clone();
            Some(k)
        }
        SinkSettings::Jsonl { .. } => None,
    }
}

/// What a daemon takes from outside besides its config. The default is production's:
/// the system clock, the operating system's fsync, no models beside the configured
/// ones. Tests inject their own.
#[derive(Clone)]
pub struct Dependencies {
    /// Wall time.
    pub clock: Arc<dyn Clock>,
    /// How the outbox makes its writes durable.
    pub outbox_sync: Arc<dyn Syncer>,
    /// How the incident journal and the audit log make their writes durable.
    pub state_sync: Arc<dyn Syncer>,
    /// Frame models run beside the configured ONNX models.
    pub frame_models: Vec<Arc<dyn FrameModel>>,
}

impl Default for Dependencies {
    fn default() -> Self {
        Dependencies {
            clock: clock::system(),
            outbox_sync: Arc::new(FileSync),
            state_sync: Arc::new(FileSync),
            frame_models: Vec::new(),
        }
    }
}

impl std::fmt::Debug for Dependencies {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Dependencies")
            .field("outbox_sync", &self.outbox_sync)
            .field("state_sync", &self.state_sync)
            .field("frame_models", &self.frame_models)
            .finish_non_exhaustive()
    }
}

/// A built daemon: every part wired, nothing served yet.
pub struct Daemon {
    config: Settings,
    engine: Arc<Engine>,
    ingest: Arc<IngestState>,
    api: Arc<ApiState>,
    pipeline: Pipeline,
    metrics: Metrics,
    sink: AnySink,
    reload: Reloader,
    router: Router,
    tls: Option<Tls>,
    metrics_listener: Option<tokio::net::TcpListener>,
    /// Names this worker (events, fleet records).
    worker_id: String,
    /// Fleet mode: streams being handed to another worker (their end is not an
    /// `ended` decision).
    handoff: Arc<std::sync::Mutex<HashSet<String>>>,
    /// The credentials and request limits (fleet mode sets this worker's share).
    auth: Arc<Authenticator>,
}

impl std::fmt::Debug for Daemon {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Daemon")
            .field("listen", &self.config.server.listen)
            .field("sink", &self.sink)
            .finish_non_exhaustive()
    }
}

impl Daemon {
    /// Builds the daemon from a validated config, on the system clock.
    pub fn build(config: Settings) -> Result<Daemon> {
        Daemon::build_with(config, Dependencies::default())
    }

    /// [`Daemon::build`] with wall time from `clock`.
    pub fn build_with_clock(config: Settings, clock: Arc<dyn Clock>) -> Result<Daemon> {
        Daemon::build_with(
            config,
            Dependencies {
                clock,
                ..Dependencies::default()
            },
        )
    }

    /// [`Daemon::build`] with injected dependencies.
    pub fn build_with(config: Settings, deps: Dependencies) -> Result<Daemon> {
        let Dependencies {
            clock,
            outbox_sync,
            state_sync,
            frame_models,
        } = deps;
        let data = config.data_dir.clone();
        std::fs::create_dir_all(&data).with_context(|| format!("{}", data.display()))?;

        let (metrics, delivery_metrics) = Metrics::new();
        let outbox_dir = data.join("outbox");
        let (outbox, recovery) = Outbox::open_with(
            &outbox_dir,
            OutboxConfig {
                max_bytes: config.outbox.max_bytes,
                max_records: config.outbox.max_records,
                ..OutboxConfig::default()
            },
            outbox_sync,
        )
        .with_context(|| format!("opening the outbox in {}", outbox_dir.display()))?;
        tracing::info!(?recovery, "outbox opened");
        let pipeline = Pipeline::new(outbox, &outbox_dir, delivery_metrics);
        let sink = match &config.sink {
            kafka @ SinkSettings::Kafka { .. } => {
                let k = kafka_config(kafka).expect("a Kafka sink");
                AnySink::Kafka(Arc::new(
                    KafkaSink::new(&k).map_err(|e| anyhow!("kafka sink: {e}"))?,
                ))
            }
            SinkSettings::Jsonl { path } => AnySink::Jsonl(
                JsonlSink::open(path).with_context(|| format!("{}", path.display()))?,
            ),
        };

        let policy = config.policy.config.clone();
        let started = Instant::now();
        let detectors = load_detectors(&config, &frame_models).map_err(joined)?;
        tracing::info!(banks = ?detectors.banks, models = detectors.classifiers.models().len(), ms = started.elapsed().as_millis() as u64, "detectors loaded");
        let worker_id = config.worker_id.clone().unwrap_or_else(|| {
            std::fs::read_to_string("/etc/hostname")
                .map(|s| s.trim().to_owned())
                .unwrap_or_else(|_| "firebreak".into())
        });
        let default_tenant = config.default_tenant();
        let producer_worker_id = worker_id.clone();
        let engine = Engine::new(
            EngineConfig {
                classify_every: config.detectors.classify_every,
                video_window_secs: config.detectors.video_window_secs,
                video_window_max_frames: config.detectors.video_window_max_frames,
                max_incidents: config.max_incidents,
                audit_path: data.join("audit.jsonl"),
                state_sync,
                producer: Producer {
                    worker_id: producer_worker_id,
                    tenant: default_tenant.clone(),
                },
            },
            clock.clone(),
            detectors,
            policy,
            pipeline.clone(),
            metrics.clone(),
        );
        // Fleet mode: every record to the signals topic too (created in `serve`).
        let fleet_sink: Option<Arc<dyn crate::signals::SignalSink>> = match &config.fleet_shared {
            None => None,
            Some(f) => {
                let publisher = firebreak_delivery::telemetry::Publisher::new(
                    &f.feeds.shared(),
                    &f.signals_topic,
                    64 * 1024,
                )
                .context("fleet mode: the signals producer")?;
                Some(
                    crate::signals::fleet::KafkaSignals::start(publisher, 1 << 16)
                        .context("fleet mode: the signals thread")?,
                )
            }
        };
        crate::signals::attach(&engine, config.signals(), &data, fleet_sink)?;
        // Evidence thumbnails (evidence.rs), to the evidence topic too in fleet mode
        // (created in `serve`).
        if let Some(dir) = config.evidence_dir() {
            let store = crate::evidence::EvidenceStore::open(&dir)
                .with_context(|| format!("opening the evidence store in {}", dir.display()))?;
            let publisher = match &config.fleet_shared {
                None => None,
                Some(f) => Some(
                    firebreak_delivery::telemetry::Publisher::new(
                        &f.feeds.shared(),
                        &f.evidence_topic,
                        16 * 1024,
                    )
                    .context("fleet mode: the evidence producer")?,
                ),
            };
            engine.set_evidence(Arc::new(crate::evidence::Recorder::new(
                store,
                config.evidence().width,
                publisher,
            )));
        }
        // Incidents and policy versions from the data directory (engine::journal,
        // engine::versions).
        engine
            .restore(&data)
            .with_context(|| format!("restoring the state in {}", data.display()))?;

        let (frames_engine, end_engine, tier_engine, owner_engine, refuse_engine) = (
            engine.clone(),
            engine.clone(),
            engine.clone(),
            engine.clone(),
            engine.clone(),
        );
        let handoff: Arc<std::sync::Mutex<HashSet<String>>> = Arc::default();
        let ingest = IngestState::new(IngestConfig {
            max_segment_bytes: config.server.max_body_bytes,
            reorder_window: config.ingest.reorder_window,
            max_streams: config.server.max_streams,
            max_streams_per_tenant: config.server.max_streams_per_tenant,
            sampling: config.ingest.sampling,
            max_output: config.ingest.max_frame,
            on_frame: Arc::new(move |f| frames_engine.on_frame(&f)),
            on_end: {
                let handoff = handoff.clone();
                Arc::new(move |id| {
                    // A stream handed to another worker (fleet mode) goes on there.
                    let moved = handoff.lock().unwrap_or_else(|e| e.into_inner()).remove(id);
                    if !moved {
                        end_engine.on_stream_event(id, StreamEvent::Ended)
                    }
                })
            },
            annotate: Some(Arc::new(move |id| tier_engine.tier(id))),
            net: Arc::new(own_addresses((*config.ingest.net).clone())),
            idle_timeout: config.ingest.idle_timeout,
            on_start: Some(Arc::new(move |id, tenant| {
                owner_engine.set_owner(id, tenant)
            })),
            clock: clock.clone(),
            on_feeder_busy: Some({
                let metrics = metrics.clone();
                Arc::new(move || metrics.throttled(crate::metrics::ThrottleLimit::FeederBusy))
            }),
            max_pts_step: config.ingest.max_pts_step,
            max_lag: config.ingest.max_lag,
            rgb: engine.rgb_wanted(),
            refuse: Some(Arc::new(move || crate::http::api::refusal(&refuse_engine))),
        });
        let streams: Arc<dyn crate::metrics::StreamSource> = ingest.clone();
        metrics.watch_streams(Arc::downgrade(&streams));
        // In fleet mode the config file's streams are registered on the streams topic
        // when serving starts (their owner runs them).
        for s in config.streams.iter().filter(|_| config.fleet.is_none()) {
            let owner = s.tenant.clone().unwrap_or_else(|| default_tenant.clone());
            ingest
                .register(s, &owner)
                .map_err(|e| anyhow!("stream {}: {e:?}", s.id))?;
        }

        let auth = Arc::new(
            Authenticator::new(
                &config.auth,
                config.server.max_body_bytes,
                config.server.rate_limits(),
                metrics.clone(),
            )
            .map_err(|e| anyhow!(e))?,
        );
        {
            let engine = engine.clone();
            auth.on_denied(Arc::new(move |d: Denied| {
                let engine = engine.clone();
                let at = engine.now_ms();
                // The audit log syncs to disk: never on the runtime.
                tokio::task::spawn_blocking(move || {
                    let who = format!("{}@{}", d.tenant.as_deref().unwrap_or("anonymous"), d.peer);
                    engine.audit_at(
                        at,
                        &who,
                        "auth.denied",
                        &d.request,
                        Value::Null,
                        json!(d.reason.as_str()),
                    );
                });
            }));
        }
        let tls: Option<Tls> = config
            .server
            .tls
            .as_ref()
            .map(|t| Arc::new(arc_swap::ArcSwap::from_pointee(t.acceptor.clone())));
        let reload_config = config.clone();
        let reload_engine = engine.clone();
        let reload_pipeline = pipeline.clone();
        let (reload_auth, reload_tls) = (auth.clone(), tls.clone());
        let reload_kafka = match &sink {
            AnySink::Kafka(k) => {
                Some((k.clone(), std::sync::Mutex::new(kafka_config(&config.sink))))
            }
            AnySink::Jsonl(_) => None,
        };
        let reload: Reloader = Arc::new(move |who: &str| {
            // The config file again (credentials, certificate, policy and bank paths);
            // everything else in it takes effect at the next start.
            let config = reload_config.reread()?;
            let policy = config.policy.config.clone();
            // The fleet's bank feed waits from before the bank files are read until the
            // new matcher is in, which gets the records it has not saved yet.
            let held = reload_engine.hold_bank_feed();
            let detectors = load_detectors(&config, &frame_models)?;
            let acceptor = match (&reload_tls, &config.server.tls) {
                (Some(_), Some(t)) => Some(t.acceptor.clone()),
                _ => None,
            };
            reload_auth
                .reload(&config.auth)
                .map_err(|e| vec![Issue::new("auth", e)])?;
            if let (Some(swap), Some(acceptor)) = (&reload_tls, acceptor) {
                swap.store(Arc::new(acceptor));
            }
            // The Kafka sink's brokers and properties (credentials): a new producer
            // when they changed. Its topic needs a restart.
            if let Some((sink, current)) = &reload_kafka
                && let Some(next) = kafka_config(&config.sink)
            {
                let mut current = current.lock().unwrap_or_else(|e| e.into_inner());
                if current.as_ref().is_some_and(|c| c.topic != next.topic) {
                    tracing::warn!("sink.topic changed: it takes effect at the next start");
                }
                if current.as_ref() != Some(&next) {
                    sink.reconfigure(&next).map_err(|e| {
                        vec![Issue::new("sink", format!("the Kafka producer: {e}"))]
                    })?;
                    tracing::warn!(brokers = %next.bootstrap_servers, "kafka sink reconfigured");
                    *current = Some(next);
                }
            }
            let banks = detectors.banks.iter().cloned().map(Into::into).collect();
            reload_engine.set_detectors(held, detectors, who);
            // The file replaces the policy only if it changed since the latest
            // policy version (engine::versions).
            let version = reload_engine.reload_policy(policy, who).map_err(|e| {
                vec![Issue {
                    path: "policy".into(),
                    message: format!("{e:?}"),
                }]
            })?;
            reload_engine.audit(
                who,
                "reload",
                "credentials",
                Value::Null,
                json!({
                    "tokens": config.auth.tokens.len(),
                    "hmac": config.auth.hmac.len(),
                    "certificate": config.server.tls.is_some(),
                }),
            );
            // Credentials may have been fixed: a paused delivery probes at once.
            reload_pipeline.resume();
            Ok(ReloadResult {
                policy_version: version,
                banks,
            })
        });
        let api = Arc::new(ApiState {
            engine: engine.clone(),
            reload: reload.clone(),
            ready: true.into(),
            shared_ready: config.fleet_shared.is_none().into(),
            fleet_policy: config.fleet_shared.is_some(),
            metrics: metrics.clone(),
            closing: tokio::sync::watch::channel(false).0,
        });
        if config.auth.tokens.is_empty() && config.auth.hmac.is_empty() {
            tracing::warn!("no credentials configured: every /v1 route will answer 401");
        }
        let router =
            crate::http::router(ingest.clone(), api.clone(), auth.clone(), metrics.clone());
        Ok(Daemon {
            config,
            engine,
            ingest,
            api,
            pipeline,
            metrics,
            sink,
            reload,
            router,
            tls,
            metrics_listener: None,
            worker_id,
            handoff,
            auth,
        })
    }

    /// Also serves `/metrics`, without credentials, on `listener` (an internal address).
    pub fn with_metrics_listener(mut self, listener: tokio::net::TcpListener) -> Daemon {
        self.metrics_listener = Some(listener);
        self
    }

    /// The detection engine.
    pub fn engine(&self) -> &Arc<Engine> {
        &self.engine
    }

    /// The streams.
    pub fn ingest(&self) -> &Arc<IngestState> {
        &self.ingest
    }

    /// The delivery pipeline (outbox and replayer).
    pub fn pipeline(&self) -> &Pipeline {
        &self.pipeline
    }

    /// The metrics.
    pub fn metrics(&self) -> &Metrics {
        &self.metrics
    }

    /// The whole HTTP surface (authenticated), to serve or to call in-process.
    pub fn router(&self) -> Router {
        self.router.clone()
    }

    /// Reloads the policy file and the banks (blocking: it reads files).
    pub fn reload(&self, who: &str) -> Result<ReloadResult, Vec<Issue>> {
        (self.reload)(who)
    }

    /// Serves the API on `listener`, delivers the outbox and ticks the engine once a
    /// second, until `shutdown` completes; then stops intake, drains the streams (30 s
    /// at most) and the outbox (20 s at most) and returns.
    pub async fn serve(
        self,
        listener: tokio::net::TcpListener,
        shutdown: impl Future<Output = ()> + Send + 'static,
    ) -> Result<()> {
        let Daemon {
            config,
            engine,
            ingest,
            api,
            pipeline,
            metrics,
            sink,
            router,
            tls,
            metrics_listener,
            worker_id,
            handoff,
            auth,
            ..
        } = self;
        let limits = config.server.limits();
        // Fleet mode: topics, the state view, the group; the routes produce from now on.
        let fleet = match &config.fleet {
            None => None,
            Some(f) => {
                if let Some(shared) = &config.fleet_shared {
                    // The signals topic (delete policy, bounded retention).
                    firebreak_delivery::telemetry::ensure_topic(
                        &shared.feeds.shared(),
                        &shared.signals_topic,
                        shared.feeds.partitions,
                        shared.feeds.replication,
                        shared.signals_retention_ms,
                    )
                    .await
                    .with_context(|| format!("fleet mode: creating {}", shared.signals_topic))?;
                    firebreak_delivery::telemetry::ensure_topic(
                        &shared.feeds.shared(),
                        &shared.evidence_topic,
                        shared.feeds.partitions,
                        shared.feeds.replication,
                        config.evidence().retention().as_millis() as u64,
                    )
                    .await
                    .with_context(|| format!("fleet mode: creating {}", shared.evidence_topic))?;
                }
                let mut f = f.clone();
                f.worker_id = worker_id.clone();
                let ready_api = api.clone();
                let workers_metrics = metrics.clone();
                let fleet = crate::fleet::Fleet::start(
                    f,
                    ingest.clone(),
                    engine.clone(),
                    handoff,
                    Arc::new(move |r: bool| {
                        let closing = *ready_api.closing.borrow();
                        ready_api.ready.store(r && !closing, Ordering::Release)
                    }),
                    // Each worker grants its share of the tenants' request rates.
                    Arc::new(move |workers: usize| {
                        auth.set_rate_share(1.0 / workers.max(1) as f64);
                        workers_metrics.fleet_workers.set(workers as i64);
                    }),
                    &config.streams,
                    &config.default_tenant(),
                )
                .await
                .context("fleet mode")?;
                ingest.set_fleet(fleet.clone());
                Some(fleet)
            }
        };
        // Fleet mode: bank entries and policy versions from the shared topics, applied
        // live; ready once both were read to their end.
        let feeds = match &config.fleet_shared {
            None => None,
            Some(f) => {
                let handle = crate::engine::feeds::spawn(
                    &f.feeds,
                    &engine,
                    config.detectors.banks_dir.clone(),
                )
                .context("fleet mode: the shared bank and policy topics")?;
                let handle = Arc::new(std::sync::Mutex::new(Some(handle)));
                let (api, h) = (api.clone(), handle.clone());
                tokio::spawn(async move {
                    let mut every = tokio::time::interval(Duration::from_millis(100));
                    loop {
                        every.tick().await;
                        let guard = h.lock().unwrap_or_else(|e| e.into_inner());
                        match guard.as_ref() {
                            Some(f) if f.ready() => break,
                            Some(_) => {}
                            None => return,
                        }
                    }
                    tracing::info!("fleet: shared bank and policy topics caught up");
                    api.shared_ready.store(true, Ordering::Release);
                });
                Some(handle)
            }
        };
        let (stop_tx, stop_rx) = tokio::sync::watch::channel(false);
        // Delivery.
        let delivery = {
            let pipeline = pipeline.clone();
            let mut rx = stop_rx.clone();
            tokio::spawn(async move {
                let stop = async move {
                    let _ = rx.wait_for(|s| *s).await;
                };
                match &sink {
                    AnySink::Jsonl(s) => pipeline.run(s, 64, stop).await,
                    AnySink::Kafka(s) => pipeline.run(&**s, 64, stop).await,
                }
            })
        };
        // Once a minute: evidence thumbnails past their retention go.
        if let Some(rec) = engine.evidence().cloned() {
            let e = config.evidence().clone();
            let mut rx = stop_rx.clone();
            tokio::spawn(async move {
                let mut every = tokio::time::interval(Duration::from_secs(60));
                loop {
                    tokio::select! {
                        _ = every.tick() => {}
                        _ = rx.wait_for(|s| *s) => return,
                    }
                    let (rec, e) = (rec.clone(), e.clone());
                    let _ = tokio::task::spawn_blocking(move || {
                        match rec.store().sweep(
                            std::time::SystemTime::now(),
                            e.retention(),
                            e.preserve(),
                        ) {
                            Ok(0) => {}
                            Ok(n) => tracing::info!(
                                removed = n,
                                "evidence thumbnails past retention removed"
                            ),
                            Err(err) => tracing::warn!(error = %err, "evidence retention sweep"),
                        }
                    })
                    .await;
                }
            });
        }
        // Once a second: idle pushed streams ended, cool-downs, stalls (the stream
        // metrics are read when scraped).
        {
            let (engine, ingest) = (engine.clone(), ingest.clone());
            let mut rx = stop_rx.clone();
            let tracker = Arc::new(std::sync::Mutex::new(StreamTracker {
                trim_every: config.ingest.heap_trim,
                ..StreamTracker::default()
            }));
            tokio::spawn(async move {
                let mut every = tokio::time::interval(Duration::from_secs(1));
                loop {
                    tokio::select! {
                        _ = every.tick() => {}
                        _ = rx.wait_for(|s| *s) => return,
                    }
                    let (engine, ingest) = (engine.clone(), ingest.clone());
                    let tracker = tracker.clone();
                    let _ = tokio::task::spawn_blocking(move || {
                        ingest.end_idle();
                        engine.tick();
                        let mut tracker = tracker.lock().unwrap_or_else(|e| e.into_inner());
                        tracker.update(&ingest, &engine);
                    })
                    .await;
                }
            });
        }
        let drain = {
            let (ingest, pipeline) = (ingest.clone(), pipeline.clone());
            async move {
                shutdown.await;
                tracing::info!("shutting down: intake stopped, draining streams");
                api.ready.store(false, Ordering::Release);
                api.closing.send_replace(true);
                if let Some(fleet) = fleet {
                    // Leave the group: the owned streams are handed off (their state
                    // published) and move to the other workers.
                    let _ = tokio::task::spawn_blocking(move || fleet.leave()).await;
                }
                if let Some(feeds) = feeds {
                    // The bank reader saves its snapshots (with their topic position)
                    // and, when entries changed, the matcher snapshot of them.
                    let _ = tokio::task::spawn_blocking(move || {
                        let handle = feeds.lock().unwrap_or_else(|e| e.into_inner()).take();
                        if let Some(h) = handle {
                            h.stop();
                        }
                    })
                    .await;
                }
                ingest.stop_intake();
                ingest.end_all();
                let deadline = Instant::now() + Duration::from_secs(30);
                while !ingest.all_finished() && Instant::now() < deadline {
                    tokio::time::sleep(Duration::from_millis(50)).await;
                }
                let deadline = Instant::now() + Duration::from_secs(20);
                while pipeline.depth() > 0 && Instant::now() < deadline {
                    tokio::time::sleep(Duration::from_millis(50)).await;
                }
                tracing::info!(undelivered = pipeline.depth(), "drained");
            }
        };
        if let Some(l) = metrics_listener {
            let scrape = {
                let metrics = metrics.clone();
                Router::new().route(
                    "/metrics",
                    axum::routing::get(move || {
                        let metrics = metrics.clone();
                        async move { crate::http::api::metrics_text(&metrics) }
                    }),
                )
            };
            let mut rx = stop_rx.clone();
            let metrics = metrics.clone();
            tokio::spawn(async move {
                let stop = async move {
                    let _ = rx.wait_for(|s| *s).await;
                };
                if let Err(e) =
                    crate::http::server::serve(l, scrape, limits, None, metrics, stop).await
                {
                    tracing::error!(error = %e, "metrics listener failed");
                }
            });
        }
        crate::http::server::serve(listener, router, limits, tls, metrics, drain).await?;
        let _ = stop_tx.send(true);
        let _ = delivery.await;
        let _ = tokio::task::spawn_blocking(move || engine.flush_signals()).await;
        tracing::info!("stopped");
        Ok(())
    }
}

/// `firebreak run --config FILE`.
pub fn run(path: Option<&Path>) -> Result<ExitCode> {
    let config = match path {
        Some(p) => ServiceConfig::load(p),
        None => ServiceConfig::parse("", Path::new(".")),
    };
    let config = match config {
        Ok(c) => c,
        Err(issues) => {
            for i in &issues {
                eprintln!("config: {i}");
            }
            return Ok(ExitCode::from(2));
        }
    };
    init_tracing(&config);
    let listen = config.server.listen;
    let metrics_listen = config.server.metrics_listen;
    let scheme = if config.server.tls.is_some() {
        "https"
    } else {
        "http"
    };
    let daemon = Daemon::build(config)?;
    let reload = daemon.reload.clone();

    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()?;
    runtime.block_on(async move {
        let listener = tokio::net::TcpListener::bind(listen)
            .await
            .with_context(|| format!("listening on {listen}"))?;
        let addr = listener.local_addr()?;
        let daemon = match &metrics_listen {
            Some(m) => {
                let l = tokio::net::TcpListener::bind(*m)
                    .await
                    .with_context(|| format!("metrics listener on {m}"))?;
                daemon.with_metrics_listener(l)
            }
            None => daemon,
        };
        // Whoever started us may have stopped reading stdout: never fail on it.
        let mut out = std::io::stdout();
        let _ = writeln!(out, "listening on {scheme}://{addr}\ndashboard: {scheme}://{addr}/");
        if let Some(l) = &daemon.metrics_listener
            && let Ok(m) = l.local_addr()
        {
            let _ = writeln!(out, "metrics: http://{m}/metrics");
        }
        let _ = out.flush();
        tracing::info!(%addr, "firebreak running");

        // SIGHUP reloads.
        tokio::spawn(async move {
            let Ok(mut hup) =
                tokio::signal::unix::signal(tokio::signal::unix::SignalKind::hangup())
            else {
                return;
            };
            while hup.recv().await.is_some() {
                let reload = reload.clone();
                match tokio::task::spawn_blocking(move || reload("SIGHUP")).await {
                    Ok(Ok(v)) => tracing::info!(result = %v, "reloaded on SIGHUP"),
                    Ok(Err(issues)) => {
                        for i in issues {
                            tracing::error!(issue = %i, "reload failed; keeping the old policy and banks");
                        }
                    }
                    Err(e) => tracing::error!(error = %e, "reload task failed"),
                }
            }
        });
        let shutdown = shutdown_signal()?;
        daemon.serve(listener, shutdown).await
    })?;
    Ok(ExitCode::SUCCESS)
}

/// Gives the allocator's free pages back to the system (glibc's `malloc_trim`). Set
/// once by the binary, which holds the unsafe call; unset, nothing is trimmed.
pub static HEAP_TRIM: std::sync::OnceLock<fn()> = std::sync::OnceLock::new();

/// Whether to trim the heap now: streams ended since the last pass (`running` fell
/// below `before`) or since the last trim, and the last trim is `every` old (trimming
/// walks every arena under its lock); `every` zero: at every pass. Pure. Returns (trim
/// now, ended streams still owed a trim).
fn trim_due(
    before: usize,
    running: usize,
    owed: bool,
    last: Option<Instant>,
    now: Instant,
    every: Duration,
) -> (bool, bool) {
    if every.is_zero() {
        return (true, false);
    }
    let owed = owed || running < before;
    let due = owed && last.is_none_or(|t| now.saturating_duration_since(t) >= every);
    (due, owed && !due)
}

/// What the once-a-second pass remembers between passes: which streams are stalled,
/// how many ran, when the heap was last trimmed and how often it may be.
#[derive(Debug, Default)]
pub struct StreamTracker {
    stalled: HashSet<String>,
    running: usize,
    trim_owed: bool,
    trimmed: Option<Instant>,
    trim_every: Duration,
}

impl StreamTracker {
    /// Reports a stream that just stalled to the engine ([`StreamEvent::Stalled`]),
    /// once per stall.
    pub fn update(&mut self, ingest: &IngestState, engine: &Engine) {
        let stats = ingest.stats();
        // Streams that ended freed their decoders' frames: the pages go back to the
        // system, so resident memory follows the streams running (glibc otherwise
        // keeps them inside its arenas).
        let running = stats
            .iter()
            .filter(|(_, st)| !matches!(st.state, MediaState::Ended | MediaState::Failed))
            .count();
        let now = Instant::now();
        let (due, owed) = trim_due(
            self.running,
            running,
            self.trim_owed,
            self.trimmed,
            now,
            self.trim_every,
        );
        (self.running, self.trim_owed) = (running, owed);
        if due && let Some(trim) = HEAP_TRIM.get() {
            trim();
            engine.metrics().heap_trims.inc();
            self.trimmed = Some(now);
            tracing::debug!(ms = now.elapsed().as_millis() as u64, "heap trimmed");
        }
        let present: HashSet<&str> = stats.iter().map(|(id, _)| id.as_str()).collect();
        self.stalled.retain(|id| present.contains(id.as_str()));
        for (id, st) in &stats {
            if st.state == MediaState::Stalled {
                if self.stalled.insert(id.clone()) {
                    engine.on_stream_event(id, StreamEvent::Stalled);
                }
            } else {
                self.stalled.remove(id);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_heap_is_trimmed_after_streams_end_at_most_every_ten_seconds() {
        let t0 = Instant::now();
        let at = |s: u64| t0 + Duration::from_secs(s);
        let ten = Duration::from_secs(10);
        // Streams start: nothing to trim.
        assert_eq!(trim_due(0, 3, false, None, t0, ten), (false, false));
        // One ends, never trimmed before: now.
        assert_eq!(trim_due(3, 2, false, None, at(1), ten), (true, false));
        // Another ends 4 s after that trim: owed until 10 s have passed.
        assert_eq!(
            trim_due(2, 1, false, Some(at(1)), at(5), ten),
            (false, true)
        );
        assert_eq!(
            trim_due(1, 1, true, Some(at(1)), at(10), ten),
            (false, true)
        );
        assert_eq!(
            trim_due(1, 1, true, Some(at(1)), at(11), ten),
            (true, false)
        );
        // Every pass when configured so, streams ended or not.
        assert_eq!(
            trim_due(1, 2, false, Some(at(100)), at(100), Duration::ZERO),
            (true, false)
        );
        // Nothing ended since: no trim, however long ago the last one was.
        assert_eq!(
            trim_due(1, 2, false, Some(at(11)), at(100), ten),
            (false, false)
        );
    }
}

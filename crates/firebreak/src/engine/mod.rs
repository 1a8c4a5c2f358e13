//! The detection engine: sampled frames in, escalation events out.
//!
//! ```text
//! SampledFrame ─▶ detect (PDQ, banks, live window, classifiers) ─▶ FrameSignals
//!      ─▶ StreamState (policy) ─▶ Decision ─┬▶ CloudEvent ─▶ outbox (fsync) ─▶ sink
//!                                           ├▶ incidents (ack / resolve) ─▶ SSE, dashboard
//!                                           └▶ risk timeline
//! operators ─▶ policy swaps, rule patches, reloads ─▶ audit log
//! ```
//!
//! Each stream's frames are processed on that stream's own consumer thread (never on
//! the async runtime), under the stream's own lock, so streams run in parallel. The
//! detectors (matcher and models) and the policy are swapped atomically on reload;
//! each stream adopts a swapped policy at its next frame, event or tick, carrying its
//! state over (`StreamState::adopt`), so a swap never waits for a stream's detectors.
//! Wall time comes from the injected [`Clock`] (frames carry their own).
//!
//! - [`detect`]: per-frame detection and each stream's state.
//! - [`incidents`]: incidents by id, acknowledged and resolved by responders.
//! - [`audit`]: who changed what, when (a hash chain).
//! - [`journal`]: incidents on disk, replayed at start.
//! - [`versions`]: the policy's numbered versions on disk, with rollback.
//!
//! Durability: [`Engine::restore`] opens the data directory's incident journal and
//! policy versions (the daemon calls it at start). From then on every incident change
//! is journaled (synced) under the journal's lock, which orders the changes; the
//! incident store's own lock is never held across I/O, so readers never wait for a
//! disk. A responder's action and a policy change are audit-logged first and applied
//! only if the entry was written.

pub mod audit;
pub mod detect;
pub mod feeds;
pub mod incidents;
pub mod journal;
pub mod versions;
pub mod views;

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Instant;

use arc_swap::ArcSwap;
use firebreak_delivery::Pipeline;
use firebreak_media::ingest::SampledFrame;
use firebreak_policy::config::{Issue, PolicyConfig};
use firebreak_policy::event::{Producer, cloud_event};
use firebreak_policy::policy::{Decision, DecisionKind, Policy, StreamEvent};
use serde_json::{Value, json};
use tokio::sync::broadcast;

use crate::clock::Clock;
use crate::metrics::{Metrics, Stage};
pub use audit::AuditEntry;
use audit::AuditLog;
use detect::StreamDetect;
pub use detect::{Detectors, FrameModel, Point};
pub use incidents::{Action, Escalation, IncidentState, IncidentStore, Mark};
use journal::Journal;
use versions::{PolicyVersions, StoredPolicy};

/// Engine settings from the config.
#[derive(Debug, Clone)]
pub struct EngineConfig {
    /// Classify every Nth sampled frame.
    pub classify_every: u32,
    /// Media seconds in the live vPDQ window.
    pub video_window_secs: f64,
    /// Frames the live vPDQ window holds at most.
    pub video_window_max_frames: usize,
    /// Incidents kept at most while some are resolved.
    pub max_incidents: usize,
    /// Where the audit log is appended.
    pub audit_path: PathBuf,
    /// How the audit log and the incident journal make their writes durable.
    pub state_sync: Arc<dyn firebreak_delivery::Syncer>,
    /// Event producer (worker id, tenant).
    pub producer: Producer,
}

/// A stream's tier and score after a sampled frame: the `stream` event of
/// `GET /v1/events`.
#[derive(Debug, Clone, PartialEq, serde::Serialize, utoipa::ToSchema)]
pub struct StreamUpdate {
    /// The stream.
    pub id: String,
    /// The tenant it belongs to.
    pub tenant: String,
    /// Its tier after the frame: 0 = none, then the policy's `tiers` in order.
    pub tier_index: usize,
    /// That tier's name (`none` for 0).
    pub tier: String,
    /// Wall time of the frame, Unix milliseconds.
    pub wall_ms: u64,
    /// The strongest rule signal of the frame, 0 to 1.
    pub score: f64,
}

/// Errors from operator actions.
#[derive(Debug)]
pub enum ActionError {
    /// No such thing.
    NotFound,
    /// Not allowed in its state.
    Conflict(String),
    /// Invalid input, with every issue.
    Invalid(Vec<Issue>),
    /// Its audit entry or its state could not be written: not applied (HTTP 500).
    Storage(String),
}

/// One stream: its detection state, locked by the stream's consumer thread across
/// hashing and inference, and what readers need published beside it, so that listing
/// streams or ticking never waits for a stream's detectors (and never holds the map of
/// streams while waiting).
#[derive(Debug)]
struct Slot {
    detect: Mutex<StreamDetect>,
    /// The risk timeline (its own short lock).
    timeline: Mutex<detect::Timeline>,
    /// The tenant the stream belongs to.
    owner: Mutex<Arc<str>>,
    /// The tier index after the last frame or event (0 = none).
    tier: AtomicUsize,
    /// When the stream ended (wall ms), 0 while it runs.
    ended_ms: AtomicU64,
}

impl Slot {
    fn lock(&self) -> std::sync::MutexGuard<'_, StreamDetect> {
        self.detect.lock().unwrap_or_else(|e| e.into_inner())
    }

    fn owner(&self) -> Arc<str> {
        self.owner.lock().unwrap_or_else(|e| e.into_inner()).clone()
    }

    fn publish(&self, s: &StreamDetect, policy: &Policy) -> usize {
        let index = policy
            .config()
            .tier_index(&s.state.tier(policy))
            .map_or(0, |i| i + 1);
        self.tier.store(index, Ordering::Release);
        index
    }
}

/// `config` with rule `name`'s thresholds changed by `patch` (a JSON object of enter,
/// exit, smoothing, k, n, within_secs, hold_secs; k and n whole numbers), validated:
/// what `PATCH /v1/policy/rules/{name}` applies and a rule-patch dry-run replays.
/// [`ActionError::NotFound`] for an unknown rule, [`ActionError::Invalid`] with every
/// problem.
pub fn patched(
    config: &PolicyConfig,
    name: &str,
    patch: &Value,
) -> Result<PolicyConfig, ActionError> {
    let mut config = config.clone();
    let rule = config
        .rules
        .iter_mut()
        .find(|r| r.name == name)
        .ok_or(ActionError::NotFound)?;
    let Some(fields) = patch.as_object() else {
        return Err(invalid("body", "expected a JSON object"));
    };
    let mut issues = Vec::new();
    for (k, v) in fields {
        let real = match k.as_str() {
            "enter" => Some(&mut rule.enter),
            "exit" => Some(&mut rule.exit),
            "smoothing" => Some(&mut rule.smoothing),
            "within_secs" => Some(&mut rule.within_secs),
            "hold_secs" => Some(&mut rule.hold_secs),
            _ => None,
        };
        let ok = match real {
            Some(field) => v.as_f64().map(|x| *field = x).is_some(),
            None => {
                let whole = match k.as_str() {
                    "k" => Some(&mut rule.k),
                    "n" => Some(&mut rule.n),
                    _ => None,
                };
                whole
                    .zip(v.as_u64())
                    .map(|(field, x)| *field = x as usize)
                    .is_some()
            }
        };
        if !ok {
            issues.push(Issue::new(
                k.clone(),
                "unknown field or not a number (enter, exit, smoothing, k, n, within_secs, hold_secs)",
            ));
        }
    }
    issues.extend(config.validate());
    if issues.is_empty() {
        Ok(config)
    } else {
        Err(ActionError::Invalid(issues))
    }
}

/// An ended stream's state is forgotten this long after it ended.
const ENDED_KEPT_MS: u64 = 3_600_000;

/// The bank feed held still, from before new detectors' bank files are read until
/// they are swapped in ([`Engine::hold_bank_feed`]).
pub struct BankFeedHold<'a>(std::sync::MutexGuard<'a, Option<feeds::BankFeed>>);

impl std::fmt::Debug for BankFeedHold<'_> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("BankFeedHold").finish_non_exhaustive()
    }
}

/// See the module doc.
pub struct Engine {
    config: EngineConfig,
    clock: Arc<dyn Clock>,
    detectors: ArcSwap<Detectors>,
    /// Whether the detectors in use need sampled frames in RGB (shared with every
    /// stream's [`firebreak_media::ingest::StreamConfig::rgb`]).
    rgb_wanted: Arc<std::sync::atomic::AtomicBool>,
    /// The fleet's bank feed (once started): its lock is held while a record is applied
    /// to the matcher and while a reload rebuilds the matcher from the bank files and
    /// swaps it in, so no record falls between the two (see [`Engine::set_detectors`]).
    bank_feed: Mutex<Option<feeds::BankFeed>>,
    policy: ArcSwap<Policy>,
    streams: Mutex<HashMap<String, Arc<Slot>>>,
    incidents: Mutex<IncidentStore>,
    /// The incident journal (after [`Engine::restore`]); its lock orders incident
    /// changes and is held across their writes.
    journal: Mutex<Option<Journal>>,
    /// A journal write failed: the next chance (a write, a tick) rewrites the whole
    /// journal from the store, so the incidents changed meanwhile reach the disk.
    journal_behind: std::sync::atomic::AtomicBool,
    /// The policy versions (after [`Engine::restore`]); its lock orders policy changes.
    versions: Mutex<Option<PolicyVersions>>,
    audit: AuditLog,
    events: broadcast::Sender<(&'static str, Value)>,
    pipeline: Pipeline,
    metrics: Metrics,
    /// Where each frame's signals, each event and each tick are recorded (set once).
    signal_sink: std::sync::OnceLock<Arc<dyn crate::signals::SignalSink>>,
    /// Evidence thumbnails (set once).
    evidence: std::sync::OnceLock<Arc<crate::evidence::Recorder>>,
    /// Failed writes of the engine's own files (`journal`, `audit`), by file: an alarm
    /// until that file's next good write.
    storage_alarms: Mutex<std::collections::BTreeMap<&'static str, String>>,
    /// The local signal log's directory (labels are stored there), when recording.
    signal_dir: std::sync::OnceLock<PathBuf>,
    /// Recent dry-runs, for changes applied on them.
    dry_runs: versions::DryRuns,
}

impl std::fmt::Debug for Engine {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Engine").finish_non_exhaustive()
    }
}

impl Engine {
    /// A new engine reading wall time from `clock`.
    pub fn new(
        config: EngineConfig,
        clock: Arc<dyn Clock>,
        detectors: Detectors,
        policy: PolicyConfig,
        pipeline: Pipeline,
        metrics: Metrics,
    ) -> Arc<Engine> {
        let (events, _) = broadcast::channel(1024);
        let max_incidents = config.max_incidents;
        let audit = AuditLog::with_sync(config.audit_path.clone(), config.state_sync.clone());
        publish_audit_head(&audit, &metrics);
        Arc::new(Engine {
            audit,
            journal: Mutex::new(None),
            journal_behind: std::sync::atomic::AtomicBool::new(false),
            versions: Mutex::new(None),
            config,
            clock,
            rgb_wanted: Arc::new(std::sync::atomic::AtomicBool::new(detectors.wants_rgb())),
            detectors: ArcSwap::from_pointee(detectors),
            bank_feed: Mutex::new(None),
            policy: ArcSwap::from_pointee(Policy::new(policy)),
            streams: Mutex::new(HashMap::new()),
            incidents: Mutex::new(IncidentStore::with_limit(max_incidents)),
            events,
            pipeline,
            metrics,
            signal_sink: std::sync::OnceLock::new(),
            evidence: std::sync::OnceLock::new(),
            storage_alarms: Mutex::new(Default::default()),
            signal_dir: std::sync::OnceLock::new(),
            dry_runs: versions::DryRuns::default(),
        })
    }

    /// Records every sampled frame's signals, stream event and tick to `sink` from now
    /// on (once; false if a sink was already set).
    pub fn set_signal_sink(&self, sink: Arc<dyn crate::signals::SignalSink>) -> bool {
        self.signal_sink.set(sink).is_ok()
    }

    /// Keeps a thumbnail of each frame that raises or updates an escalation from now on
    /// (once; false if set already).
    pub fn set_evidence(&self, recorder: Arc<crate::evidence::Recorder>) -> bool {
        self.evidence.set(recorder).is_ok()
    }

    /// The evidence thumbnails, if kept.
    pub fn evidence(&self) -> Option<&Arc<crate::evidence::Recorder>> {
        self.evidence.get()
    }

    /// Sends `data` on the live feed as a `kind` event (filtered by its `tenant`).
    pub fn publish(&self, kind: &'static str, data: Value) {
        let _ = self.events.send((kind, data));
    }

    /// Names the local signal log's directory (once), where labels are stored.
    pub fn set_signal_dir(&self, dir: PathBuf) -> bool {
        self.signal_dir.set(dir).is_ok()
    }

    /// The local signal log's directory, if signals are recorded locally.
    pub fn signal_dir(&self) -> Option<PathBuf> {
        self.signal_dir.get().cloned()
    }

    /// Writes the signal sink's queued records (blocking; at shutdown).
    pub fn flush_signals(&self) {
        if let Some(s) = self.signal_sink.get() {
            s.flush();
        }
    }

    /// Notes the outcome of a write of `file` (`journal`, `audit`): a failure raises
    /// the storage alarm (readiness false) until the file's next good write.
    fn storage<T, E: std::fmt::Display>(&self, file: &'static str, result: &Result<T, E>) {
        let mut alarms = lock(&self.storage_alarms);
        match result {
            Ok(_) => {
                if alarms.remove(file).is_some() {
                    tracing::warn!(file, "writable again");
                }
            }
            Err(e) => {
                alarms.insert(file, e.to_string());
            }
        }
        self.metrics.disk_alarm.set(i64::from(!alarms.is_empty()));
    }

    /// The engine's storage alarms: `(file, error)` of its files whose last write
    /// failed (a full disk, an I/O error).
    pub fn storage_alarms(&self) -> Vec<(String, String)> {
        lock(&self.storage_alarms)
            .iter()
            .map(|(k, v)| ((*k).to_owned(), v.clone()))
            .collect()
    }

    /// The current policy.
    pub fn policy(&self) -> Arc<Policy> {
        self.policy.load_full()
    }

    /// Live updates for the dashboard: `(kind, data)`.
    pub fn subscribe(&self) -> broadcast::Receiver<(&'static str, Value)> {
        self.events.subscribe()
    }

    /// The delivery pipeline.
    pub fn pipeline(&self) -> &Pipeline {
        &self.pipeline
    }

    fn fresh(&self, id: &str, policy: &Arc<Policy>) -> StreamDetect {
        StreamDetect::new(
            id,
            policy,
            self.config.video_window_secs,
            self.config.video_window_max_frames,
        )
    }

    /// The wall clock's time.
    pub fn now_ms(&self) -> u64 {
        self.clock.now_ms()
    }

    fn new_slot(&self, id: &str, policy: &Arc<Policy>, owner: &str) -> Arc<Slot> {
        Arc::new(Slot {
            detect: Mutex::new(self.fresh(id, policy)),
            timeline: Mutex::new(detect::Timeline::default()),
            owner: Mutex::new(Arc::from(owner)),
            tier: AtomicUsize::new(0),
            ended_ms: AtomicU64::new(0),
        })
    }

    fn stream(&self, id: &str, policy: &Arc<Policy>) -> Arc<Slot> {
        let mut streams = self.streams.lock().unwrap_or_else(|e| e.into_inner());
        streams
            .entry(id.to_owned())
            .or_insert_with(|| self.new_slot(id, policy, &self.config.producer.tenant))
            .clone()
    }

    /// Records that stream `id` belongs to `tenant` (its incidents, events and
    /// timeline are that tenant's). A new owner starts from nothing: a new slot
    /// replaces the previous owner's, so this never waits for a stream's detectors
    /// (it is called on the async runtime when a pushed stream starts).
    pub fn set_owner(&self, id: &str, tenant: &str) {
        let policy = self.policy();
        let mut streams = self.streams.lock().unwrap_or_else(|e| e.into_inner());
        if streams.get(id).is_none_or(|slot| *slot.owner() != *tenant) {
            streams.insert(id.to_owned(), self.new_slot(id, &policy, tenant));
        }
    }

    /// Stream `id`'s policy state (fleet mode publishes it so the next owner keeps the
    /// stream's incident), with the version of the policy it is adapted to.
    pub fn policy_state(
        &self,
        id: &str,
    ) -> Option<(firebreak_policy::policy::StreamState, String)> {
        let slot = self.slot(id)?;
        let s = slot.lock();
        Some((s.state.clone(), s.policy_version().to_owned()))
    }

    /// Stream `id` of `tenant` continues from `state` (published by its previous
    /// owner): a new slot holding it, adapted to the current policy at its next frame.
    /// `policy_version` is the version `state` was adapted to; a state from another
    /// policy version is started afresh (its rules may not line up).
    pub fn restore_policy_state(
        &self,
        id: &str,
        tenant: &str,
        state: firebreak_policy::policy::StreamState,
        policy_version: &str,
    ) {
        let policy = self.policy();
        let slot = self.new_slot(id, &policy, tenant);
        if policy.version() == policy_version {
            slot.lock().state = state;
            let s = slot.lock();
            slot.publish(&s, &policy);
        } else {
            tracing::warn!(stream = %id, from = %policy_version, to = %policy.version(), "stream state of another policy version not restored");
        }
        self.streams
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .insert(id.to_owned(), slot);
    }

    /// Forgets stream `id` here without an `ended` decision (fleet mode: it moved to
    /// another worker, which continues its state).
    pub fn forget_stream(&self, id: &str) {
        if self
            .streams
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .remove(id)
            .is_some()
        {
            self.metrics.stream_tier.remove_label_values(&[id]).ok();
        }
    }

    /// The tenant stream `id` belongs to (the producer's tenant if unknown).
    pub fn owner(&self, id: &str) -> Arc<str> {
        match self.slot(id) {
            Some(slot) => slot.owner(),
            None => Arc::from(self.config.producer.tenant.as_str()),
        }
    }

    fn slot(&self, id: &str) -> Option<Arc<Slot>> {
        self.streams
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .get(id)
            .cloned()
    }

    /// Runs the detectors and the policy on one frame (blocking: hashing, inference
    /// and an fsync; call it from the stream's consumer thread).
    pub fn on_frame(&self, frame: &SampledFrame) {
        let m = &self.metrics;
        m.frames_sampled.inc();
        if let Some(arrival) = frame.arrival_ms {
            m.stage(Stage::Decode)
                .observe(frame.wall_ms.saturating_sub(arrival) as f64 / 1000.0);
        }
        let stream = self.stream(&frame.stream_id, &self.policy());
        let mut s = stream.lock();
        // The policy in force once the stream is held: a swap between reading it and
        // taking the lock cannot make this frame go back to an older policy.
        let policy = self.policy();
        if stream.ended_ms.load(Ordering::Acquire) != 0 {
            // The id is in use again: a new stream, with fresh state.
            *s = self.fresh(&frame.stream_id, &policy);
            *stream.timeline.lock().unwrap_or_else(|e| e.into_inner()) =
                detect::Timeline::default();
            stream.ended_ms.store(0, Ordering::Release);
        }
        s.adapt(&policy);
        let detectors = self.detectors.load();
        let tenant = stream.owner();
        let Some(signals) = s.signals(&detectors, frame, &tenant, self.config.classify_every, m)
        else {
            return;
        };
        if let Some(sink) = self.signal_sink.get() {
            sink.record(crate::signals::SignalRecord::Frame(
                crate::signals::record::FrameRecord {
                    stream: frame.stream_id.to_string(),
                    tenant: stream.owner().to_string(),
                    pdq: s.last_pdq,
                    signals: signals.clone(),
                },
            ));
        }
        let t = Instant::now();
        let decisions = s.state.on_frame(&policy, &signals);
        m.stage(Stage::Policy).observe(t.elapsed().as_secs_f64());
        let tier_index = stream.publish(&s, &policy);
        let score = detect::score(&signals);
        stream
            .timeline
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .push(Point {
                wall_ms: frame.wall_ms,
                media_time: frame.pts,
                tier_index,
                score,
            });
        drop(s);
        m.stream_tier
            .with_label_values(&[&frame.stream_id])
            .set(tier_index as i64);
        let owner = stream.owner();
        let thumbnails = self.thumbnails(&decisions, frame, &owner);
        self.emit(&policy, decisions, frame.origin_ms, &owner, &thumbnails);
        let update = StreamUpdate {
            id: frame.stream_id.to_string(),
            tenant: owner.to_string(),
            tier_index,
            tier: tier_name(&policy, tier_index),
            wall_ms: frame.wall_ms,
            score,
        };
        let _ = self.events.send((
            "stream",
            serde_json::to_value(update).expect("a stream update is JSON"),
        ));
    }

    /// A stream ended or stalled.
    pub fn on_stream_event(&self, id: &str, event: StreamEvent) {
        let stream = self.stream(id, &self.policy());
        let mut s = stream.lock();
        let policy = self.policy();
        if event == StreamEvent::Ended {
            if stream.ended_ms.load(Ordering::Acquire) != 0 {
                return;
            }
            stream
                .ended_ms
                .store(self.now_ms().max(1), Ordering::Release);
            s.release();
        }
        s.adapt(&policy);
        let now = self.now_ms();
        if let Some(sink) = self.signal_sink.get() {
            use crate::signals::record::{EventKind, EventRecord};
            let kind = match event {
                StreamEvent::Stalled => Some(EventKind::Stalled),
                StreamEvent::Ended => Some(EventKind::Ended),
                StreamEvent::Started => None,
            };
            if let Some(kind) = kind {
                sink.record(crate::signals::SignalRecord::Event(EventRecord {
                    stream: id.to_owned(),
                    tenant: stream.owner().to_string(),
                    kind,
                    wall_ms: now,
                }));
            }
        }
        let decisions = s.state.on_event(&policy, event, now);
        stream.publish(&s, &policy);
        drop(s);
        if event == StreamEvent::Ended {
            // An ended stream's series goes with it (its state stays, for an hour).
            self.metrics.stream_tier.remove_label_values(&[id]).ok();
        }
        self.emit(&policy, decisions, None, &stream.owner(), &HashMap::new());
    }

    /// Lets quiet streams cool down (call every second or so), and forgets streams
    /// that ended more than an hour ago.
    pub fn tick(&self) {
        self.journal_catch_up();
        let now = self.now_ms();
        if let Some(sink) = self.signal_sink.get() {
            sink.record(crate::signals::SignalRecord::Tick { wall_ms: now });
        }
        let hour_ago = now.saturating_sub(ENDED_KEPT_MS);
        let streams: Vec<Arc<Slot>> = {
            let mut map = self.streams.lock().unwrap_or_else(|e| e.into_inner());
            map.retain(|id, s| {
                let ended = s.ended_ms.load(Ordering::Acquire);
                let keep = ended == 0 || ended > hour_ago;
                if !keep {
                    self.metrics.stream_tier.remove_label_values(&[id]).ok();
                }
                keep
            });
            map.values().cloned().collect()
        };
        for stream in streams {
            let mut s = stream.lock();
            let policy = self.policy();
            s.adapt(&policy);
            let decisions = s.state.tick(&policy, now);
            stream.publish(&s, &policy);
            drop(s);
            self.emit(&policy, decisions, None, &stream.owner(), &HashMap::new());
        }
    }

    /// The evidence thumbnail of `frame` for each decision that raised or updated an
    /// escalation on it, by decision id (one image, stored under each).
    fn thumbnails(
        &self,
        decisions: &[Decision],
        frame: &SampledFrame,
        owner: &str,
    ) -> HashMap<String, String> {
        let mut out = HashMap::new();
        let Some(rec) = self.evidence.get() else {
            return out;
        };
        let mut rgb = None;
        for d in decisions {
            if !matches!(d.kind, DecisionKind::Escalated | DecisionKind::Updated) {
                continue;
            }
            let meta = crate::evidence::ThumbnailMeta {
                v: 1,
                id: d.id.clone(),
                tenant: owner.to_owned(),
                stream: d.stream_id.clone(),
                media_ms: (frame.pts.max(0.0) * 1000.0) as u64,
                wall_ms: d.wall_ms,
            };
            let rgb = rgb.get_or_insert_with(|| frame.rgb());
            if let Some(r) = rec.record(&meta, rgb, frame.width, frame.height) {
                out.insert(d.id.clone(), r);
            }
        }
        out
    }

    /// Each decision (on a stream of tenant `owner`) into the outbox, the incidents
    /// and the live feed, with its evidence thumbnail's reference if it has one.
    fn emit(
        &self,
        policy: &Policy,
        decisions: Vec<Decision>,
        origin_ms: Option<u64>,
        owner: &str,
        thumbnails: &HashMap<String, String>,
    ) {
        if decisions.is_empty() {
            return;
        }
        let producer = Producer {
            worker_id: self.config.producer.worker_id.clone(),
            tenant: owner.to_owned(),
        };
        for d in decisions {
            let t = Instant::now();
            let mut event = cloud_event(&d, &producer);
            let thumbnail = thumbnails.get(&d.id);
            if let Some(t) = thumbnail {
                event["data"]["thumbnail"] = Value::String(t.clone());
            }
            let bytes = serde_json::to_vec(&event).expect("json");
            // A full outbox or a failed write is waited out (and alarmed by the
            // pipeline), never dropped: the ingest is refused meanwhile (503).
            match self
                .pipeline
                .accept_retrying(&d.stream_id, &bytes, origin_ms)
            {
                Ok(_) => {}
                Err(e) => {
                    self.metrics.accept_errors.inc();
                    tracing::error!(stream = %d.stream_id, decision = %d.id, error = %e, "ALARM: escalation not written to the outbox");
                }
            }
            self.metrics
                .stage(Stage::Delivery)
                .observe(t.elapsed().as_secs_f64());
            if d.kind == DecisionKind::Escalated {
                self.metrics.escalations.with_label_values(&[&d.tier]).inc();
            }
            tracing::info!(stream = %d.stream_id, incident = %d.incident_id, kind = ?d.kind, tier = %d.tier, rules = ?d.rules, "decision");
            let esc = self.record(policy, &d, owner, thumbnail);
            let _ = self
                .events
                .send(("escalation", serde_json::to_value(esc).expect("json")));
        }
    }

    fn record(
        &self,
        policy: &Policy,
        d: &Decision,
        tenant: &str,
        thumbnail: Option<&String>,
    ) -> Escalation {
        let tier_index = policy.config().tier_index(&d.tier).map_or(0, |i| i + 1);
        let mut journal = lock(&self.journal);
        let (view, incident, kept, was) = {
            let mut store = lock(&self.incidents);
            let was = store.incident(&d.incident_id).map(|e| e.state_name());
            let mut view = store.record(d, tier_index, tenant);
            if let Some(t) = thumbnail {
                store.set_thumbnail(&d.incident_id, t.clone());
                view.thumbnail = Some(t.clone());
            }
            let incident = store.incident(&d.incident_id).cloned();
            (view, incident, store.len(), was)
        };
        if was == Some("resolved") && view.state == "open" {
            // New evidence reopened a resolved incident: the policy acted for the
            // stream's tenant.
            tracing::warn!(incident = %d.incident_id, stream = %d.stream_id, "new evidence reopened a resolved incident");
            let appended = self.audit.append(
                d.wall_ms,
                tenant,
                Some("policy"),
                "escalation.reopen",
                &d.incident_id,
                serde_json::to_value(&view.reopened).map_or(Value::Null, |r| r["resolved"].clone()),
                serde_json::json!({ "state": "open", "decision": d.id }),
            );
            self.storage("audit", &appended);
        }
        if let (Some(j), Some(incident)) = (journal.as_mut(), incident) {
            self.journal_write(j, &d.incident_id, &incident, kept);
        }
        view
    }

    /// Appends to the journal (compacting it when due); a failure raises the alarm.
    fn journal_write(
        &self,
        j: &mut Journal,
        id: &str,
        incident: &incidents::Incident,
        kept: usize,
    ) -> bool {
        let appended = j.append(id, incident, kept);
        match appended {
            Ok(due) => {
                if due || self.journal_behind.load(Ordering::Acquire) {
                    return self.journal_rewrite(j, Some((id, incident)));
                }
                self.storage("journal", &appended);
                true
            }
            Err(e) => {
                tracing::error!(incident = id, error = %e, "ALARM: could not write the incident journal");
                self.journal_behind.store(true, Ordering::Release);
                self.storage("journal", &Err::<(), _>(e));
                false
            }
        }
    }

    /// Rewrites the journal from the store (compaction, or catching up after a failed
    /// write), with `change` (an incident as it is about to be stored) in place of the
    /// store's; a failure keeps the alarm and the journal behind.
    fn journal_rewrite(
        &self,
        j: &mut Journal,
        change: Option<(&str, &incidents::Incident)>,
    ) -> bool {
        let mut all = lock(&self.incidents).export();
        if let Some((id, incident)) = change {
            match all.iter_mut().find(|(i, _)| i == id) {
                Some(e) => e.1 = incident.clone(),
                None => all.push((id.to_owned(), incident.clone())),
            }
        }
        let r = j.compact(&all);
        if let Err(e) = &r {
            tracing::error!(error = %e, "ALARM: could not rewrite the incident journal");
        }
        self.journal_behind.store(r.is_err(), Ordering::Release);
        self.storage("journal", &r);
        r.is_ok()
    }

    /// After a failed journal write: tries to write the whole store again (blocking;
    /// called by [`Engine::tick`]), so an incident that changes no more is not left out
    /// of the journal once the disk has room.
    fn journal_catch_up(&self) {
        if !self.journal_behind.load(Ordering::Acquire) {
            return;
        }
        let mut journal = lock(&self.journal);
        if let Some(j) = journal.as_mut()
            && self.journal_behind.load(Ordering::Acquire)
            && self.journal_rewrite(j, None)
        {
            tracing::warn!("the incident journal caught up after failed writes");
        }
    }

    /// Opens the durable state in `data_dir` (blocking; call once at start): replays
    /// the incident journal `incidents.jsonl` (see [`journal`]) and applies the policy
    /// versions in `policy-versions/` against the policy the engine was built with
    /// (the policy file's; see [`versions`] for which wins). Returns the incidents
    /// restored.
    pub fn restore(&self, data_dir: &Path) -> std::io::Result<usize> {
        let path = data_dir.join("incidents.jsonl");
        let incidents = journal::replay(&path)?;
        let store = IncidentStore::restored(incidents, self.config.max_incidents);
        let restored = store.len();
        let j = Journal::create(&path, &store.export(), self.config.state_sync.clone())?;
        {
            let mut journal = lock(&self.journal);
            *lock(&self.incidents) = store;
            *journal = Some(j);
        }
        let mut v = PolicyVersions::open(&data_dir.join("policy-versions"))?;
        let file = self.policy();
        self.adopt_file_policy(&mut v, file.config(), "startup")?;
        *lock(&self.versions) = Some(v);
        tracing::info!(
            incidents = restored,
            policy = self.policy().version(),
            "state restored"
        );
        Ok(restored)
    }

    /// Applies the rule of [`versions`] for the policy file's `file` policy: the latest
    /// stored version if the file did not change since it was made, else the file
    /// (stored as a new version). Returns whether the file won.
    fn adopt_file_policy(
        &self,
        v: &mut PolicyVersions,
        file: &PolicyConfig,
        who: &str,
    ) -> std::io::Result<bool> {
        let file_sha = versions::policy_sha256(file);
        match v.latest() {
            Some(latest) if latest.file_sha256 == file_sha => {
                let config = PolicyConfig::from_toml(&latest.toml).map_err(|e| {
                    std::io::Error::new(
                        std::io::ErrorKind::InvalidData,
                        format!("policy version {}: {e}", latest.number),
                    )
                })?;
                if versions::policy_sha256(&config)
                    != versions::policy_sha256(self.policy().config())
                {
                    tracing::info!(version = latest.number, source = %latest.source, "the policy file is unchanged since the latest policy version: keeping it");
                    self.policy.store(Arc::new(Policy::new(config)));
                }
                Ok(false)
            }
            _ => {
                let n = v.save(StoredPolicy {
                    format: String::new(),
                    format_version: 0,
                    number: 0,
                    at_ms: self.now_ms(),
                    who: who.to_owned(),
                    source: "file".into(),
                    policy_version: Policy::new(file.clone()).version().to_owned(),
                    file_sha256: file_sha,
                    rolled_back_from: None,
                    dry_run: None,
                    toml: toml::to_string(file).unwrap_or_default(),
                })?;
                tracing::info!(version = n, "the policy file is a new policy version");
                Ok(true)
            }
        }
    }

    /// The policy file was read again (SIGHUP, `POST /v1/reload`): it replaces the
    /// policy if it changed since the latest version was made (see [`versions`]), else
    /// the latest version stays. Audit-logged as a `reload` either way. Blocking.
    pub fn reload_policy(&self, file: PolicyConfig, who: &str) -> Result<String, ActionError> {
        let mut guard = lock(&self.versions);
        let Some(v) = guard.as_mut() else {
            drop(guard);
            return self.set_policy(file, who, who, "reload", "policy");
        };
        let file_sha = versions::policy_sha256(&file);
        if v.latest().is_some_and(|l| l.file_sha256 == file_sha) {
            let version = self.policy().version().to_owned();
            self.audit_checked(who, None, "reload", "policy", json!({"version": version}), json!({"version": version, "kept": "the policy file is unchanged since the latest policy version"}))?;
            return Ok(version);
        }
        self.change_policy(
            Some(v),
            file,
            who,
            who,
            "reload",
            "policy",
            None,
            Some(file_sha),
            None,
        )
    }

    /// Open and acknowledged incidents of `tenant` (`None`: every tenant's), and
    /// those resolved in the last hour; most recently updated first.
    pub fn escalations(&self, tenant: Option<&str>) -> Vec<Escalation> {
        let now = self.now_ms();
        self.incidents
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .list(now, tenant)
    }

    /// [`Engine::escalations`], `limit` of them from `offset`.
    pub fn escalations_page(
        &self,
        tenant: Option<&str>,
        offset: usize,
        limit: usize,
    ) -> incidents::Page {
        let now = self.now_ms();
        lock(&self.incidents).page(now, tenant, offset, limit)
    }

    /// Acknowledges or resolves an incident `tenant` may see (`None`: any),
    /// audit-logged and announced to the dashboards. Blocking: it returns once the
    /// audit entry is on disk (call it through `spawn_blocking` in async code).
    ///
    /// The entry records `credential` beside `who`. The change is applied only once its
    /// audit entry is written, then journaled: an audit failure answers
    /// [`ActionError::Storage`] with the incident unchanged.
    pub fn act(
        &self,
        id: &str,
        action: Action,
        who: &str,
        credential: &str,
        note: &str,
        tenant: Option<&str>,
    ) -> Result<Escalation, ActionError> {
        let mark = Mark {
            by: who.to_owned(),
            at_ms: self.now_ms(),
            note: note.to_owned(),
        };
        // The journal's lock orders this change with every other incident change.
        let mut journal = lock(&self.journal);
        let (old, next) = lock(&self.incidents).plan(id, action, mark, tenant)?;
        let new_state = next.as_ref().map_or(old, |n| n.state_name());
        self.audit_checked(
            who,
            Some(credential),
            action.audit_name(),
            id,
            json!(old),
            json!(new_state),
        )?;
        let e = match next {
            Some(next) => {
                if let Some(j) = journal.as_mut() {
                    let kept = lock(&self.incidents).len();
                    if !self.journal_write(j, id, &next, kept) {
                        return Err(ActionError::Storage(
                            "the incident state could not be written".into(),
                        ));
                    }
                }
                lock(&self.incidents).put(id, next)
            }
            None => lock(&self.incidents).get(id).ok_or(ActionError::NotFound)?,
        };
        drop(journal);
        let _ = self
            .events
            .send(("escalation", serde_json::to_value(&e).expect("json")));
        Ok(e)
    }

    /// A stream's risk timeline, if `tenant` may see it (`None`: any).
    pub fn timeline(&self, id: &str, tenant: Option<&str>) -> Option<Vec<Point>> {
        let slot = self.slot(id)?;
        if tenant.is_some_and(|t| *slot.owner() != *t) {
            return None;
        }
        let points = slot
            .timeline
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .points();
        Some(points)
    }

    /// A stream's current tier (name, index), as published after its last frame or
    /// event: never waits for the stream's detectors.
    pub fn tier(&self, id: &str) -> (String, usize) {
        let Some(slot) = self.slot(id) else {
            return ("none".into(), 0);
        };
        let policy = self.policy();
        let index = slot
            .tier
            .load(Ordering::Acquire)
            .min(policy.config().tiers.len());
        (tier_name(&policy, index), index)
    }

    /// Replaces the policy (each stream adopts it lazily, carrying its state over),
    /// audit-logged (with `credential`) and stored as a new policy version first: if
    /// either write fails the policy stays as it was ([`ActionError::Storage`]).
    /// Blocking.
    pub fn set_policy(
        &self,
        config: PolicyConfig,
        who: &str,
        credential: &str,
        action: &str,
        target: &str,
    ) -> Result<String, ActionError> {
        self.set_policy_after(config, who, credential, action, target, None)
    }

    /// [`Engine::set_policy`], applied on dry-run `dry_run` (an id a dry-run of this
    /// engine answered): the version records it, and a policy other than the one the
    /// dry-run replayed is refused ([`ActionError::Conflict`]), as is an unknown id.
    pub fn set_policy_after(
        &self,
        config: PolicyConfig,
        who: &str,
        credential: &str,
        action: &str,
        target: &str,
        dry_run: Option<&str>,
    ) -> Result<String, ActionError> {
        let record = match dry_run {
            None => None,
            Some(id) => Some(
                self.dry_runs
                    .check(id, &config)
                    .map_err(ActionError::Conflict)?,
            ),
        };
        let mut guard = lock(&self.versions);
        self.change_policy(
            guard.as_mut(),
            config,
            who,
            credential,
            action,
            target,
            None,
            None,
            record,
        )
    }

    /// Remembers a dry-run's record, for a change applied on it.
    pub fn remember_dry_run(&self, record: versions::DryRunRecord) {
        self.dry_runs.remember(record);
    }

    /// Rolls the policy back to stored version `number` (a new version with its
    /// policy), audit-logged as `policy.rollback`. Blocking.
    pub fn rollback_policy(
        &self,
        number: u64,
        who: &str,
        credential: &str,
    ) -> Result<String, ActionError> {
        let mut guard = lock(&self.versions);
        let Some(v) = guard.as_mut() else {
            return Err(ActionError::NotFound);
        };
        let stored = v
            .get(number)
            .map_err(|e| ActionError::Storage(e.to_string()))?
            .ok_or(ActionError::NotFound)?;
        let config = crate::config::policy_from_toml(&stored.toml, "version")
            .map_err(ActionError::Invalid)?;
        self.change_policy(
            Some(v),
            config,
            who,
            credential,
            "policy.rollback",
            &format!("version {number}"),
            Some(number),
            None,
            None,
        )
    }

    /// The stored policy versions, oldest first, without their TOML (empty before
    /// [`Engine::restore`]). Blocking (reads the versions directory).
    pub fn policy_versions(&self) -> Result<Vec<versions::StoredPolicy>, ActionError> {
        let guard = lock(&self.versions);
        let Some(v) = guard.as_ref() else {
            return Ok(Vec::new());
        };
        let storage = |e: std::io::Error| ActionError::Storage(e.to_string());
        let mut out = Vec::new();
        for n in v.numbers().map_err(storage)? {
            if let Some(s) = v.get(n).map_err(storage)? {
                out.push(s);
            }
        }
        Ok(out)
    }

    #[allow(clippy::too_many_arguments)]
    fn change_policy(
        &self,
        versions: Option<&mut PolicyVersions>,
        config: PolicyConfig,
        who: &str,
        credential: &str,
        action: &str,
        target: &str,
        rolled_back_from: Option<u64>,
        file_sha256: Option<String>,
        dry_run: Option<versions::DryRunRecord>,
    ) -> Result<String, ActionError> {
        let new = Arc::new(Policy::new(config));
        let old = self.policy();
        let old_v = toml::to_string(old.config()).unwrap_or_default();
        let new_v = toml::to_string(new.config()).unwrap_or_default();
        let head = self.audit_checked(
            who,
            Some(credential),
            action,
            target,
            json!({"version": old.version(), "toml": old_v}),
            json!({"version": new.version(), "toml": new_v.clone(), "dry_run": dry_run}),
        )?;
        let mut number = None;
        if let Some(v) = versions {
            let file_sha256 = file_sha256
                .or_else(|| v.latest().map(|l| l.file_sha256.clone()))
                .unwrap_or_default();
            let n = v
                .save(StoredPolicy {
                    format: String::new(),
                    format_version: 0,
                    number: 0,
                    at_ms: self.now_ms(),
                    who: who.to_owned(),
                    source: action.to_owned(),
                    policy_version: new.version().to_owned(),
                    file_sha256,
                    rolled_back_from,
                    dry_run: dry_run.clone(),
                    toml: new_v,
                })
                .map_err(|e| {
                    tracing::error!(error = %e, "ALARM: could not store the policy version");
                    ActionError::Storage(format!("the policy version could not be stored: {e}"))
                })?;
            number = Some(n);
        }
        // Swapped at once; each stream adopts it at its next frame, event or tick (the
        // once-a-second tick adopts it everywhere), so a swap never waits for a
        // stream's detectors.
        self.policy.store(new.clone());
        tracing::info!(
            who,
            action,
            old = old.version(),
            new = new.version(),
            number,
            "policy changed"
        );
        let _ = self.events.send((
            "policy",
            json!({"version": new.version(), "number": number, "action": action, "audit_head": head}),
        ));
        Ok(new.version().to_owned())
    }

    /// The audit log's head: the sha256 of its last line.
    pub fn audit_head(&self) -> String {
        self.audit.head()
    }

    /// Appends to the audit log; a failure is [`ActionError::Storage`]. Returns the new
    /// head.
    fn audit_checked(
        &self,
        who: &str,
        credential: Option<&str>,
        action: &str,
        target: &str,
        old: Value,
        new: Value,
    ) -> Result<String, ActionError> {
        let appended = self
            .audit
            .append(self.now_ms(), who, credential, action, target, old, new);
        self.storage("audit", &appended);
        appended
            .map_err(|e| ActionError::Storage(format!("the audit log could not be written: {e}")))
    }

    /// Changes one rule's thresholds.
    pub fn patch_rule(
        &self,
        name: &str,
        patch: &Value,
        who: &str,
        credential: &str,
        dry_run: Option<&str>,
    ) -> Result<String, ActionError> {
        let config = patched(self.policy().config(), name, patch)?;
        self.set_policy_after(config, who, credential, "policy.rule", name, dry_run)
    }

    /// The detectors in use (the matcher takes live bank updates, see [`feeds`]).
    pub fn detectors(&self) -> Arc<Detectors> {
        self.detectors.load_full()
    }

    /// Whether streams should sample frames in RGB: the detectors in use have colour
    /// models. Given to every stream's config; follows reloads.
    pub fn rgb_wanted(&self) -> Arc<std::sync::atomic::AtomicBool> {
        self.rgb_wanted.clone()
    }

    /// The metrics.
    pub fn metrics(&self) -> &Metrics {
        &self.metrics
    }

    /// Holds the bank feed still: no record is applied until the guard is given to
    /// [`Engine::set_detectors`] (or dropped). Take it before reading the bank files
    /// for new detectors.
    pub fn hold_bank_feed(&self) -> BankFeedHold<'_> {
        BankFeedHold(lock(&self.bank_feed))
    }

    /// Swaps the detectors (banks and models) in. `held` must have been taken before
    /// the detectors' bank files were read: the records the fleet's bank feed applied
    /// but has not saved to those files yet are applied to the new matcher before it
    /// is swapped in, so a reload loses none of them.
    pub fn set_detectors(&self, held: BankFeedHold<'_>, detectors: Detectors, who: &str) {
        if let Some(feed) = held.0.as_ref() {
            let n = feed.reapply(&detectors.matcher);
            if n > 0 {
                tracing::info!(
                    entries = n,
                    "reload: bank records not yet saved applied again"
                );
            }
        }
        let banks = json!(detectors.banks);
        let old = json!(self.detectors.load().banks);
        let rgb = detectors.wants_rgb();
        self.detectors.store(Arc::new(detectors));
        // After the swap: a frame sampled without RGB meanwhile is converted for the
        // new models (`SampledFrame::rgb`), never refused.
        self.rgb_wanted
            .store(rgb, std::sync::atomic::Ordering::Relaxed);
        drop(held);
        self.audit(who, "reload", "banks", old, banks);
    }

    /// Runs `f` with the bank feed's slot (holding it: see [`Engine::hold_bank_feed`]).
    pub(crate) fn with_bank_feed<T>(&self, f: impl FnOnce(&mut Option<feeds::BankFeed>) -> T) -> T {
        f(&mut lock(&self.bank_feed))
    }

    /// Appends to the audit log (file and memory); a failure is logged (an alarm).
    pub fn audit(&self, who: &str, action: &str, target: &str, old: Value, new: Value) {
        let appended = self
            .audit
            .append(self.now_ms(), who, None, action, target, old, new);
        self.storage("audit", &appended);
    }

    /// [`Engine::audit`] for something that happened at wall time `at_ms` (written
    /// later, off the async runtime).
    pub fn audit_at(
        &self,
        at_ms: u64,
        who: &str,
        action: &str,
        target: &str,
        old: Value,
        new: Value,
    ) {
        let appended = self
            .audit
            .append(at_ms, who, None, action, target, old, new);
        self.storage("audit", &appended);
    }

    /// The audit entries kept in memory, oldest first: those made by `tenant`
    /// (`None`: everyone's).
    pub fn audit_entries(&self, tenant: Option<&str>) -> Vec<AuditEntry> {
        let mut all = self.audit.entries();
        if let Some(t) = tenant {
            all.retain(|e| e.who.as_deref() == Some(t));
        }
        all
    }
}

fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|e| e.into_inner())
}

/// Publishes the audit log's head as `firebreak_audit_head{head="…"} 1` (the previous
/// head's series removed), an info-style gauge.
fn publish_audit_head(audit: &AuditLog, metrics: &Metrics) {
    let gauge = prometheus::IntGaugeVec::new(
        prometheus::Opts::new(
            "firebreak_audit_head",
            "The sha256 of the audit log's last line (label head), 1.",
        ),
        &["head"],
    )
    .expect("metric");
    if metrics.registry.register(Box::new(gauge.clone())).is_err() {
        return;
    }
    audit.on_head(Box::new(move |old, new| {
        gauge.remove_label_values(&[old]).ok();
        gauge.with_label_values(&[new]).set(1);
    }));
}

fn tier_name(policy: &Policy, index: usize) -> String {
    if index == 0 {
        "none".into()
    } else {
        policy.config().tiers[index - 1].clone()
    }
}

fn invalid(path: &str, message: &str) -> ActionError {
    ActionError::Invalid(vec![Issue::new(path, message)])
}

#[cfg(test)]
mod tests {
    use std::sync::mpsc;
    use std::time::Duration;

    use firebreak_classify::ClassifierSet;
    use firebreak_delivery::outbox::{Outbox, OutboxConfig};
    use firebreak_matching::matcher::{MatchConfig, Matcher};
    use firebreak_policy::config::{DEFAULT_POLICY, PolicyConfig};

    use super::*;
    use crate::clock::ManualClock;

    /// A rule patch sets exactly the fields it names (k and n only to whole numbers)
    /// and refuses, with every problem, unknown fields, non-numbers, fractional k and
    /// an unknown rule.
    #[test]
    fn a_rule_patch_sets_the_named_thresholds_and_refuses_anything_else() {
        let base = PolicyConfig::builtin();
        let name = base.rules[0].name.clone();
        let patch = json!({"enter": 0.95, "exit": 0.5, "k": 3, "n": 4, "hold_secs": 12.5});
        let new = patched(&base, &name, &patch).unwrap();
        let (r, was) = (&new.rules[0], &base.rules[0]);
        assert_eq!(
            (r.enter, r.exit, r.k, r.n, r.hold_secs),
            (0.95, 0.5, 3, 4, 12.5)
        );
        assert_eq!(
            (r.smoothing, r.within_secs),
            (was.smoothing, was.within_secs)
        );
        assert_eq!(new.rules[1..], base.rules[1..]);
        let refused = |patch: Value| match patched(&base, &name, &patch) {
            Err(ActionError::Invalid(issues)) => {
                issues.into_iter().map(|i| i.path).collect::<Vec<_>>()
            }
            other => panic!("{patch} was not refused: {other:?}"),
        };
        assert_eq!(refused(json!({"k": 2.5})), ["k"]);
        assert_eq!(refused(json!({"enter": "high"})), ["enter"]);
        assert_eq!(refused(json!({"weight": 1, "n": -1})), ["n", "weight"]);
        assert!(matches!(
            patched(&base, "no-such-rule", &json!({"enter": 0.9})),
            Err(ActionError::NotFound)
        ));
    }

    fn engine(dir: &std::path::Path) -> Arc<Engine> {
        let (metrics, delivery) = Metrics::new();
        let (outbox, _) = Outbox::open(dir, OutboxConfig::default()).unwrap();
        Engine::new(
            EngineConfig {
                classify_every: 1,
                video_window_secs: 10.0,
                video_window_max_frames: firebreak_matching::window::DEFAULT_MAX_FRAMES,
                max_incidents: incidents::KEPT,
                audit_path: dir.join("audit.jsonl"),
                state_sync: Arc::new(firebreak_delivery::FileSync),
                producer: Producer {
                    worker_id: "w".into(),
                    tenant: "t".into(),
                },
            },
            ManualClock::at(1_000),
            Detectors {
                matcher: Matcher::new([], MatchConfig::default(), 1),
                classifiers: ClassifierSet::new(Vec::new()),
                frame_models: Vec::new(),
                banks: Vec::new(),
                views: Default::default(),
            },
            PolicyConfig::from_toml(DEFAULT_POLICY).unwrap(),
            Pipeline::new(outbox, dir, delivery),
            metrics,
        )
    }

    #[derive(Debug)]
    struct Silent;
    impl detect::FrameModel for Silent {
        fn classify(&self, _: &SampledFrame) -> Vec<firebreak_policy::policy::ClassifierScore> {
            Vec::new()
        }
    }

    /// Streams are told to sample RGB exactly while a model is loaded: not without
    /// one, yes after a reload brings one, no again after a reload drops it (the same
    /// flag every stream's config holds).
    #[test]
    fn streams_sample_rgb_only_while_a_model_is_loaded() {
        let dir = tempfile::tempdir().unwrap();
        let engine = engine(dir.path());
        let flag = engine.rgb_wanted();
        let load = |models: Vec<Arc<dyn detect::FrameModel>>| {
            let held = engine.hold_bank_feed();
            engine.set_detectors(
                held,
                Detectors {
                    matcher: Matcher::new([], MatchConfig::default(), 1),
                    classifiers: ClassifierSet::new(Vec::new()),
                    frame_models: models,
                    banks: Vec::new(),
                    views: Default::default(),
                },
                "test",
            );
        };
        let rgb = || flag.load(std::sync::atomic::Ordering::Relaxed);
        assert!(!rgb(), "no model: planes");
        load(vec![Arc::new(Silent)]);
        assert!(rgb(), "a model loaded: RGB");
        load(Vec::new());
        assert!(!rgb(), "the model unloaded: planes again");
    }

    /// Readers (the stream list's tier, another stream's events and timeline, the
    /// incident list) and a new owner taking the id answer while one stream's
    /// detectors hold its lock, as they do across hashing and inference. A generous
    /// deadline, not a timing assertion: before the tier was published and a new owner
    /// got a new slot, these calls waited for the lock (and blocked the map of streams
    /// while they did).
    #[test]
    fn readers_never_wait_for_a_streams_detectors() {
        let dir = tempfile::tempdir().unwrap();
        let engine = engine(dir.path());
        engine.on_stream_event("busy", StreamEvent::Stalled);
        engine.on_stream_event("other", StreamEvent::Stalled);
        let busy = engine.slot("busy").unwrap();
        let held = busy.lock();
        let (tx, rx) = mpsc::channel();
        let e = engine.clone();
        std::thread::spawn(move || {
            let tier = e.tier("busy");
            e.on_stream_event("other", StreamEvent::Stalled);
            assert!(e.timeline("other", None).is_some());
            let listed = e.escalations(None).len();
            e.set_owner("busy", "newcomer");
            let _ = tx.send((tier, listed, e.owner("busy").to_string()));
        });
        let answer = rx.recv_timeout(Duration::from_secs(30));
        drop(held);
        assert_eq!(
            answer,
            Ok((("none".to_owned(), 0), 0, "newcomer".to_owned()))
        );
    }

    /// Policy swaps while frames flow: four streams' consumer threads feed frames while
    /// the policy alternates between the built-in one (five rules) and a one-rule
    /// policy. No interleaving may stop a stream's analysis: every thread finishes
    /// (a panic in the engine would fail the join) and every frame is on its stream's
    /// timeline.
    #[test]
    fn policy_swaps_while_frames_flow_stop_no_stream() {
        let dir = tempfile::tempdir().unwrap();
        let engine = engine(dir.path());
        let one_rule = PolicyConfig::from_toml(
            r#"
version = "one-rule"
tiers = ["crisis"]
[[rule]]
name = "any"
kind = "hash_match"
tier = "crisis"
"#,
        )
        .unwrap();
        let default = PolicyConfig::from_toml(DEFAULT_POLICY).unwrap();
        const FRAMES: u64 = 200;
        let feeders: Vec<_> = (0..4)
            .map(|n| {
                let e = engine.clone();
                std::thread::spawn(move || {
                    let id: Arc<str> = Arc::from(format!("s{n}"));
                    let rgb: Arc<[u8]> = vec![(n * 40) as u8; 32 * 32 * 3].into();
                    for i in 0..FRAMES {
                        e.on_frame(&SampledFrame {
                            stream_id: id.clone(),
                            index: i,
                            pts: i as f64 * 0.5,
                            wall_ms: 1_000 + i * 500,
                            arrival_ms: None,
                            origin_ms: None,
                            keyframe: true,
                            width: 32,
                            height: 32,
                            pixels: firebreak_media::ingest::Pixels::Rgb24(rgb.clone()),
                        });
                        if i % 50 == 0 {
                            e.on_stream_event(&id, StreamEvent::Stalled);
                        }
                    }
                })
            })
            .collect();
        let swapper = {
            let e = engine.clone();
            std::thread::spawn(move || {
                for i in 0..100 {
                    let p = if i % 2 == 0 { &one_rule } else { &default };
                    e.set_policy(p.clone(), "op", "token:test", "policy.replace", "policy")
                        .unwrap();
                    e.tick();
                }
            })
        };
        swapper.join().expect("the swapper");
        for f in feeders {
            f.join().expect("a stream's analysis thread died");
        }
        for n in 0..4 {
            let timeline = engine.timeline(&format!("s{n}"), None).unwrap();
            assert_eq!(timeline.len() as u64, FRAMES, "stream s{n}");
        }
        // The last swap installed the built-in policy.
        assert_eq!(engine.policy().config().version, "default-1");
    }

    /// A stream id that passes to another tenant (the old stream finished and was
    /// forgotten) starts from nothing: nothing of the previous owner's stream remains.
    #[test]
    fn a_new_owner_starts_from_nothing() {
        let dir = tempfile::tempdir().unwrap();
        let engine = engine(dir.path());
        engine.set_owner("cam", "a");
        engine.on_stream_event("cam", StreamEvent::Ended);
        let slot = engine.slot("cam").unwrap();
        slot.timeline.lock().unwrap().push(Point {
            wall_ms: 1,
            media_time: 0.0,
            tier_index: 4,
            score: 1.0,
        });
        slot.tier.store(4, Ordering::Release);
        assert_eq!(&*engine.owner("cam"), "a");
        assert_eq!(engine.timeline("cam", Some("b")), None);
        // The same owner again changes nothing.
        engine.set_owner("cam", "a");
        assert_eq!(engine.timeline("cam", Some("a")).unwrap().len(), 1);
        engine.set_owner("cam", "b");
        assert_eq!(&*engine.owner("cam"), "b");
        assert_eq!(engine.timeline("cam", Some("b")), Some(Vec::new()));
        assert_eq!(engine.tier("cam"), ("none".to_owned(), 0));
        assert_eq!(
            engine.slot("cam").unwrap().ended_ms.load(Ordering::Acquire),
            0
        );
    }
}

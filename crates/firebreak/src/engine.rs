//! The detection engine: sampled frames in, escalation events out.
//!
//! ```text
//! SampledFrame ─▶ PDQ hash ─▶ Matcher (banks) ─┬▶ FrameSignals ─▶ StreamState (policy)
//!                         └─▶ VpdqWindow ──────┤        │
//!        └─▶ ClassifierSet (every Nth frame) ──┘        ▼
//!                                   Decision ─▶ CloudEvent ─▶ outbox (fsync) ─▶ sink
//!                                           └─▶ escalation store ─▶ SSE / dashboard
//! ```
//!
//! Each stream's frames are processed on that stream's own consumer thread (never on
//! the async runtime), under the stream's own lock, so streams run in parallel. The
//! detectors (matcher and models) and the policy are swapped atomically on reload; a
//! policy swap carries every stream's state over (`StreamState::adopt`).

use std::collections::{HashMap, VecDeque};
use std::fs::OpenOptions;
use std::io::Write;
use std::path::PathBuf;
use std::sync::{Arc, Mutex, RwLock};
use std::time::Instant;

use arc_swap::ArcSwap;
use firebreak_classify::{ClassifierSet, RgbImage};
use firebreak_core::config::PolicyConfig;
use firebreak_core::event::{Producer, cloud_event};
use firebreak_core::policy::{
    ClassifierScore, Decision, DecisionKind, Evidence, FrameSignals, HashMatch, Policy,
    StreamEvent, StreamState, VideoMatch,
};
use firebreak_kafka::Pipeline;
use firebreak_media::ingest::SampledFrame;
use pdq::matcher::Matcher;
use pdq::window::{VpdqWindow, WindowConfig};
use pdq::{ImageView, PdqHasher, PixelFormat};
use serde::Serialize;
use serde_json::{Value, json};
use tokio::sync::broadcast;

use crate::metrics::Metrics;

fn now_ms() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_millis() as u64)
}

/// The loaded detectors; replaced whole on reload.
#[derive(Debug)]
pub struct Detectors {
    /// Banks, indexed.
    pub matcher: Matcher,
    /// Models.
    pub classifiers: ClassifierSet,
    /// Bank name → (entries, negative), for reports.
    pub banks: Vec<(String, usize, bool)>,
}

/// Engine settings from the config.
#[derive(Debug, Clone)]
pub struct EngineConfig {
    /// Classify every Nth sampled frame.
    pub classify_every: u32,
    /// Media seconds in the live vPDQ window.
    pub video_window_secs: f64,
    /// Where the audit log is appended.
    pub audit_path: PathBuf,
    /// Event producer (worker id, tenant).
    pub producer: Producer,
}

/// Someone's acknowledgement or resolution.
#[derive(Debug, Clone, Serialize)]
pub struct Mark {
    /// Tenant.
    pub by: String,
    /// When.
    pub at_ms: u64,
    /// Free text.
    pub note: String,
}

/// An incident as responders see it.
#[derive(Debug, Clone, Serialize)]
pub struct Escalation {
    /// The incident id.
    pub id: String,
    /// Stream.
    pub stream_id: String,
    /// Current tier.
    pub tier: String,
    /// Its index (1 = lowest tier).
    pub tier_index: usize,
    /// `open`, `acknowledged` or `resolved`.
    pub state: &'static str,
    /// First decision.
    pub opened_ms: u64,
    /// Last decision.
    pub updated_ms: u64,
    /// When the policy closed it (cooled down, or the stream ended).
    pub closed_ms: Option<u64>,
    /// Policy version of the last decision.
    pub policy_version: String,
    /// Active rules.
    pub rules: Vec<String>,
    /// Media range.
    pub media_start: f64,
    /// Media range end.
    pub media_end: f64,
    /// Evidence of the last decision.
    pub evidence: Vec<Evidence>,
    /// Acknowledgement.
    pub acknowledged: Option<Mark>,
    /// Resolution.
    pub resolved: Option<Mark>,
}

/// One point of a stream's risk timeline.
#[derive(Debug, Clone, Copy, Serialize)]
pub struct Point {
    /// Wall time.
    pub wall_ms: u64,
    /// Media time.
    pub media_time: f64,
    /// Tier index (0 = none).
    pub tier_index: usize,
    /// The strongest signal in [0, 1].
    pub score: f64,
}

const TIMELINE: usize = 2400;
const AUDIT_KEPT: usize = 1000;

struct StreamDetect {
    state: StreamState,
    window: VpdqWindow,
    hasher: PdqHasher,
    frames: u64,
    last_media: f64,
    timeline: VecDeque<Point>,
    /// When the stream ended (wall ms), if it did.
    ended: Option<u64>,
}

/// Errors from operator actions.
#[derive(Debug)]
pub enum ActionError {
    /// No such thing.
    NotFound,
    /// Not allowed in its state.
    Conflict(String),
    /// Invalid input, with every issue.
    Invalid(Vec<crate::config::Issue>),
}

/// See the module doc.
pub struct Engine {
    config: EngineConfig,
    detectors: ArcSwap<Detectors>,
    policy: RwLock<Arc<Policy>>,
    streams: Mutex<HashMap<String, Arc<Mutex<StreamDetect>>>>,
    escalations: Mutex<Vec<Escalation>>,
    audit: Mutex<VecDeque<Value>>,
    events: broadcast::Sender<(&'static str, Value)>,
    pipeline: Pipeline,
    metrics: Metrics,
}

impl std::fmt::Debug for Engine {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Engine").finish_non_exhaustive()
    }
}

impl Engine {
    /// A new engine.
    pub fn new(
        config: EngineConfig,
        detectors: Detectors,
        policy: PolicyConfig,
        pipeline: Pipeline,
        metrics: Metrics,
    ) -> Arc<Engine> {
        let (events, _) = broadcast::channel(1024);
        Arc::new(Engine {
            config,
            detectors: ArcSwap::from_pointee(detectors),
            policy: RwLock::new(Arc::new(Policy::new(policy))),
            streams: Mutex::new(HashMap::new()),
            escalations: Mutex::new(Vec::new()),
            audit: Mutex::new(VecDeque::new()),
            events,
            pipeline,
            metrics,
        })
    }

    /// The current policy.
    pub fn policy(&self) -> Arc<Policy> {
        self.policy
            .read()
            .unwrap_or_else(|e| e.into_inner())
            .clone()
    }

    /// Live updates for the dashboard: `(kind, data)`.
    pub fn subscribe(&self) -> broadcast::Receiver<(&'static str, Value)> {
        self.events.subscribe()
    }

    /// The delivery pipeline.
    pub fn pipeline(&self) -> &Pipeline {
        &self.pipeline
    }

    fn fresh(&self, id: &str, policy: &Policy) -> StreamDetect {
        StreamDetect {
            state: StreamState::new(id, policy),
            window: VpdqWindow::new(WindowConfig {
                window_secs: self.config.video_window_secs,
                // Every percentage is reported; the policy's rule applies the enter
                // and exit levels.
                enter_percent: 100.0,
                exit_percent: 100.0,
                ..WindowConfig::default()
            }),
            hasher: PdqHasher::new(),
            frames: 0,
            last_media: 0.0,
            timeline: VecDeque::new(),
            ended: None,
        }
    }

    fn stream(&self, id: &str, policy: &Policy) -> Arc<Mutex<StreamDetect>> {
        let mut streams = self.streams.lock().unwrap_or_else(|e| e.into_inner());
        streams
            .entry(id.to_owned())
            .or_insert_with(|| Arc::new(Mutex::new(self.fresh(id, policy))))
            .clone()
    }

    /// Runs the detectors and the policy on one frame (blocking: hashing, inference
    /// and an fsync; call it from the stream's consumer thread).
    pub fn on_frame(&self, frame: &SampledFrame) {
        let m = &self.metrics;
        m.frames_sampled.inc();
        if let Some(arrival) = frame.arrival_ms {
            m.stage("decode")
                .observe(frame.wall_ms.saturating_sub(arrival) as f64 / 1000.0);
        }
        // The policy before the stream's lock: `set_policy` takes them in that order.
        let policy = self.policy();
        let stream = self.stream(&frame.stream_id, &policy);
        let mut s = stream.lock().unwrap_or_else(|e| e.into_inner());
        if s.ended.is_some() {
            // The id is in use again: a new stream, with fresh state.
            *s = self.fresh(&frame.stream_id, &policy);
        }
        let detectors = self.detectors.load();

        let t = Instant::now();
        let Ok(view) = ImageView::packed(
            &frame.rgb,
            frame.width as usize,
            frame.height as usize,
            PixelFormat::Rgb8,
        ) else {
            m.frames_dropped.with_label_values(&["bad_frame"]).inc();
            return;
        };
        let hash = s.hasher.hash(&view);
        m.stage("hash").observe(t.elapsed().as_secs_f64());

        let t = Instant::now();
        let mut signals = FrameSignals {
            media_time: frame.pts,
            wall_ms: frame.wall_ms,
            ..FrameSignals::default()
        };
        let result = detectors.matcher.match_pdq(&hash.hash);
        for hit in &result.matches {
            m.matches.with_label_values(&[&hit.entry.bank]).inc();
            signals.hash_matches.push(HashMatch {
                bank: hit.entry.bank.to_string(),
                entry_id: hit.entry.id.to_string(),
                distance: hit.distance,
                quality: hash.quality,
            });
        }
        let matcher = &detectors.matcher;
        s.window.push(frame.pts, hash.hash, hash.quality, |h| {
            let mut v: Vec<u32> = matcher
                .frame_video_hits(h)
                .into_iter()
                .map(|(v, _)| v)
                .collect();
            v.dedup();
            v
        });
        for (video, percent) in s.window.percentages() {
            if percent > 0.0 {
                let entry = matcher.video_entry(video);
                signals.video_matches.push(VideoMatch {
                    bank: entry.bank.to_string(),
                    entry_id: entry.id.to_string(),
                    percent,
                });
            }
        }
        m.stage("match").observe(t.elapsed().as_secs_f64());

        if !detectors.classifiers.is_empty()
            && s.frames
                .is_multiple_of(u64::from(self.config.classify_every))
        {
            let t = Instant::now();
            let image = RgbImage {
                width: frame.width,
                height: frame.height,
                data: &frame.rgb,
            };
            for r in detectors.classifiers.classify(&image) {
                match r.result {
                    Ok(c) => {
                        signals
                            .scores
                            .extend(c.categories.iter().map(|cat| ClassifierScore {
                                category: cat.category.clone(),
                                score: f64::from(cat.score),
                                model: c.model.clone(),
                                model_version: c.model_version.clone(),
                            }))
                    }
                    Err(e) => {
                        tracing::warn!(model = %r.model, error = %e, "classifier failed on a frame")
                    }
                }
            }
            m.stage("classify").observe(t.elapsed().as_secs_f64());
        }
        s.frames += 1;
        s.last_media = frame.pts;

        let t = Instant::now();
        let decisions = s.state.on_frame(&policy, &signals);
        m.stage("policy").observe(t.elapsed().as_secs_f64());
        let tier_index = policy
            .config()
            .tier_index(&s.state.tier(&policy))
            .map_or(0, |i| i + 1);
        let score = signals
            .hash_matches
            .iter()
            .map(|_| 1.0)
            .chain(signals.video_matches.iter().map(|v| v.percent / 100.0))
            .chain(signals.scores.iter().map(|c| c.score))
            .fold(0.0f64, f64::max);
        let point = Point {
            wall_ms: frame.wall_ms,
            media_time: frame.pts,
            tier_index,
            score,
        };
        if s.timeline.len() == TIMELINE {
            s.timeline.pop_front();
        }
        s.timeline.push_back(point);
        drop(s);
        m.stream_tier
            .with_label_values(&[&frame.stream_id])
            .set(tier_index as i64);
        self.emit(&policy, decisions, frame.arrival_ms);
        let _ = self.events.send((
            "stream",
            json!({"id": &*frame.stream_id, "tier_index": tier_index, "tier": tier_name(&policy, tier_index), "wall_ms": frame.wall_ms, "score": score}),
        ));
    }

    /// A stream ended or stalled.
    pub fn on_stream_event(&self, id: &str, event: StreamEvent) {
        let policy = self.policy();
        let stream = self.stream(id, &policy);
        let mut s = stream.lock().unwrap_or_else(|e| e.into_inner());
        if event == StreamEvent::Ended {
            if s.ended.is_some() {
                return;
            }
            s.ended = Some(now_ms());
        }
        let decisions = s.state.on_event(&policy, event, now_ms());
        drop(s);
        self.emit(&policy, decisions, None);
    }

    /// Lets quiet streams cool down (call every second or so), and forgets streams
    /// that ended more than an hour ago.
    pub fn tick(&self) {
        let policy = self.policy();
        let hour_ago = now_ms().saturating_sub(3_600_000);
        let streams: Vec<Arc<Mutex<StreamDetect>>> = {
            let mut map = self.streams.lock().unwrap_or_else(|e| e.into_inner());
            map.retain(|id, s| {
                let keep = s
                    .lock()
                    .unwrap_or_else(|e| e.into_inner())
                    .ended
                    .is_none_or(|at| at > hour_ago);
                if !keep {
                    self.metrics.stream_tier.remove_label_values(&[id]).ok();
                    self.metrics.last_frame_age.remove_label_values(&[id]).ok();
                }
                keep
            });
            map.values().cloned().collect()
        };
        for stream in streams {
            let mut s = stream.lock().unwrap_or_else(|e| e.into_inner());
            let decisions = s.state.tick(&policy, now_ms());
            drop(s);
            self.emit(&policy, decisions, None);
        }
    }

    fn emit(&self, policy: &Policy, decisions: Vec<Decision>, origin_ms: Option<u64>) {
        for d in decisions {
            let t = Instant::now();
            let event = cloud_event(&d, &self.config.producer);
            let bytes = serde_json::to_vec(&event).expect("json");
            match self.pipeline.accept_from(&d.stream_id, &bytes, origin_ms) {
                Ok(_) => {}
                Err(e) => {
                    self.metrics.accept_errors.inc();
                    tracing::error!(stream = %d.stream_id, decision = %d.id, error = %e, "ALARM: escalation not written to the outbox");
                }
            }
            self.metrics
                .stage("delivery")
                .observe(t.elapsed().as_secs_f64());
            if d.kind == DecisionKind::Escalated {
                self.metrics.escalations.with_label_values(&[&d.tier]).inc();
            }
            tracing::info!(stream = %d.stream_id, incident = %d.incident_id, kind = ?d.kind, tier = %d.tier, rules = ?d.rules, "decision");
            let esc = self.record(policy, &d);
            let _ = self
                .events
                .send(("escalation", serde_json::to_value(esc).expect("json")));
        }
    }

    fn record(&self, policy: &Policy, d: &Decision) -> Escalation {
        let mut all = self.escalations.lock().unwrap_or_else(|e| e.into_inner());
        let closing = matches!(d.kind, DecisionKind::Ended) || d.tier == "none";
        let tier_index = policy.config().tier_index(&d.tier).map_or(0, |i| i + 1);
        if let Some(e) = all.iter_mut().find(|e| e.id == d.incident_id) {
            if !closing {
                e.tier = d.tier.clone();
                e.tier_index = tier_index;
                e.rules = d.rules.clone();
                e.evidence = d.evidence.clone();
            }
            e.updated_ms = d.wall_ms;
            e.media_end = d.media_end;
            e.policy_version = d.policy_version.clone();
            if closing {
                e.closed_ms = Some(d.wall_ms);
            }
            return e.clone();
        }
        let e = Escalation {
            id: d.incident_id.clone(),
            stream_id: d.stream_id.clone(),
            tier: d.tier.clone(),
            tier_index,
            state: "open",
            opened_ms: d.wall_ms,
            updated_ms: d.wall_ms,
            closed_ms: closing.then_some(d.wall_ms),
            policy_version: d.policy_version.clone(),
            rules: d.rules.clone(),
            media_start: d.media_start,
            media_end: d.media_end,
            evidence: d.evidence.clone(),
            acknowledged: None,
            resolved: None,
        };
        all.push(e.clone());
        // Keep the store bounded: drop the oldest resolved incidents first.
        if all.len() > 5000
            && let Some(i) = all.iter().position(|e| e.state == "resolved")
        {
            all.remove(i);
        }
        e
    }

    /// Open and acknowledged incidents, and those resolved in the last hour; newest
    /// first.
    pub fn escalations(&self) -> Vec<Escalation> {
        let hour_ago = now_ms().saturating_sub(3_600_000);
        let all = self.escalations.lock().unwrap_or_else(|e| e.into_inner());
        let mut out: Vec<Escalation> = all
            .iter()
            .filter(|e| e.resolved.as_ref().is_none_or(|r| r.at_ms >= hour_ago))
            .cloned()
            .collect();
        out.sort_by_key(|e| std::cmp::Reverse(e.updated_ms));
        out
    }

    /// Acknowledges (`resolve == false`) or resolves an incident.
    pub fn mark(
        &self,
        id: &str,
        resolve: bool,
        who: &str,
        note: &str,
    ) -> Result<Escalation, ActionError> {
        let mut all = self.escalations.lock().unwrap_or_else(|e| e.into_inner());
        let e = all
            .iter_mut()
            .find(|e| e.id == id)
            .ok_or(ActionError::NotFound)?;
        if e.state == "resolved" {
            return Err(ActionError::Conflict("already resolved".into()));
        }
        let old = e.state;
        let mark = Mark {
            by: who.to_owned(),
            at_ms: now_ms(),
            note: note.to_owned(),
        };
        if resolve {
            e.state = "resolved";
            e.resolved = Some(mark);
        } else if e.acknowledged.is_none() {
            e.state = "acknowledged";
            e.acknowledged = Some(mark);
        }
        let e = e.clone();
        drop(all);
        let action = if resolve {
            "escalation.resolve"
        } else {
            "escalation.ack"
        };
        self.audit(who, action, id, json!(old), json!(e.state));
        let _ = self
            .events
            .send(("escalation", serde_json::to_value(&e).expect("json")));
        Ok(e)
    }

    /// A stream's risk timeline.
    pub fn timeline(&self, id: &str) -> Option<Vec<Point>> {
        let streams = self.streams.lock().unwrap_or_else(|e| e.into_inner());
        let s = streams.get(id)?.lock().unwrap_or_else(|e| e.into_inner());
        Some(s.timeline.iter().copied().collect())
    }

    /// A stream's current tier (name, index).
    pub fn tier(&self, id: &str) -> (String, usize) {
        let policy = self.policy();
        let streams = self.streams.lock().unwrap_or_else(|e| e.into_inner());
        let Some(s) = streams.get(id) else {
            return ("none".into(), 0);
        };
        let name = s
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .state
            .tier(&policy);
        let index = policy.config().tier_index(&name).map_or(0, |i| i + 1);
        (name, index)
    }

    /// Replaces the policy, carrying every stream's state over, and audit-logs it.
    pub fn set_policy(
        &self,
        config: PolicyConfig,
        who: &str,
        action: &str,
        target: &str,
    ) -> String {
        let new = Arc::new(Policy::new(config));
        let mut current = self.policy.write().unwrap_or_else(|e| e.into_inner());
        let old = current.clone();
        let streams: Vec<Arc<Mutex<StreamDetect>>> = self
            .streams
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .values()
            .cloned()
            .collect();
        for s in streams {
            s.lock()
                .unwrap_or_else(|e| e.into_inner())
                .state
                .adopt(&old, &new);
        }
        *current = new.clone();
        drop(current);
        let old_v = toml::to_string(old.config()).unwrap_or_default();
        let new_v = toml::to_string(new.config()).unwrap_or_default();
        self.audit(
            who,
            action,
            target,
            json!({"version": old.version(), "toml": old_v}),
            json!({"version": new.version(), "toml": new_v}),
        );
        tracing::info!(
            who,
            action,
            old = old.version(),
            new = new.version(),
            "policy changed"
        );
        new.version().to_owned()
    }

    /// Changes one rule's thresholds.
    pub fn patch_rule(&self, name: &str, patch: &Value, who: &str) -> Result<String, ActionError> {
        let mut config = self.policy().config().clone();
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
            let num = v.as_f64();
            let ok = match (k.as_str(), num) {
                ("enter", Some(x)) => {
                    rule.enter = x;
                    true
                }
                ("exit", Some(x)) => {
                    rule.exit = x;
                    true
                }
                ("smoothing", Some(x)) => {
                    rule.smoothing = x;
                    true
                }
                ("within_secs", Some(x)) => {
                    rule.within_secs = x;
                    true
                }
                ("hold_secs", Some(x)) => {
                    rule.hold_secs = x;
                    true
                }
                ("k", Some(_)) | ("n", Some(_)) => match v.as_u64() {
                    Some(x) if k == "k" => {
                        rule.k = x as usize;
                        true
                    }
                    Some(x) => {
                        rule.n = x as usize;
                        true
                    }
                    None => false,
                },
                _ => false,
            };
            if !ok {
                issues.push(crate::config::Issue {
                    path: k.clone(),
                    message: "unknown field or not a number (enter, exit, smoothing, k, n, within_secs, hold_secs)".into(),
                });
            }
        }
        issues.extend(config.validate().into_iter().map(|i| crate::config::Issue {
            path: i.path,
            message: i.message,
        }));
        if !issues.is_empty() {
            return Err(ActionError::Invalid(issues));
        }
        Ok(self.set_policy(config, who, "policy.rule", name))
    }

    /// Swaps the detectors (banks and models) in.
    pub fn set_detectors(&self, detectors: Detectors, who: &str) {
        let banks = json!(detectors.banks);
        let old = json!(self.detectors.load().banks);
        self.detectors.store(Arc::new(detectors));
        self.audit(who, "reload", "banks", old, banks);
    }

    /// Appends to the audit log (file and memory).
    pub fn audit(&self, who: &str, action: &str, target: &str, old: Value, new: Value) {
        let entry = json!({"at_ms": now_ms(), "who": who, "action": action, "target": target, "old": old, "new": new});
        tracing::info!(target: "audit", who, action, target, "audit");
        let written = OpenOptions::new()
            .create(true)
            .append(true)
            .open(&self.config.audit_path)
            .and_then(|mut f| writeln!(f, "{entry}").and_then(|()| f.sync_data()));
        if let Err(e) = written {
            tracing::error!(error = %e, path = %self.config.audit_path.display(), "could not write the audit log");
        }
        let mut audit = self.audit.lock().unwrap_or_else(|e| e.into_inner());
        if audit.len() == AUDIT_KEPT {
            audit.pop_front();
        }
        audit.push_back(entry);
    }

    /// The audit entries kept in memory, oldest first.
    pub fn audit_entries(&self) -> Vec<Value> {
        self.audit
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .iter()
            .cloned()
            .collect()
    }
}

fn tier_name(policy: &Policy, index: usize) -> String {
    if index == 0 {
        "none".into()
    } else {
        policy.config().tiers[index - 1].clone()
    }
}

fn invalid(path: &str, message: &str) -> ActionError {
    ActionError::Invalid(vec![crate::config::Issue {
        path: path.into(),
        message: message.into(),
    }])
}

//! The coordinator's state: everything it has read from the escalations, signals and
//! incidents topics, folded in order. Pure apart from its inputs (no I/O, no clock of
//! its own: every input carries its wall time), so two coordinators that read the same
//! topics hold the same incidents, and a restarted one rebuilds them.

use std::collections::{BTreeMap, HashMap, HashSet, VecDeque};

use firebreak_coordinator::confirm::{self, Candidate, Guards, Preview};
use firebreak_coordinator::incidents::{
    Action, ActionError, BankEntry, DecisionKind, Escalation, IncidentConfig, Incidents, State,
};
use firebreak_coordinator::links::{ContentLinks, LinkConfig};
use firebreak_coordinator::{FrameSignal, StreamKey};
use firebreak_hashing::Hash256;
use serde::{Deserialize, Serialize};
use serde_json::Value;

use crate::config::Coordinator as CoordinatorConfig;
use crate::signals::labels::parse_time;
use crate::signals::record::{SignalRecord, decode_block};

/// Format version of [`ActionRecord`].
pub const ACTION_VERSION: u32 = 1;

/// Frames kept per stream at most, whatever `history_secs` says.
const MAX_HISTORY_FRAMES: usize = 8192;

/// Escalation ids remembered to drop redeliveries (the latest; a redelivery follows its
/// original closely).
const SEEN_IDS: usize = 100_000;

/// A responder action on the incidents topic (keyed by incident id): the coordinator's
/// action log, and the event a platform follows to act on confirmed streams.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ActionRecord {
    /// Format version.
    pub v: u32,
    /// Deterministic: the incident and how many actions it had before, so two
    /// coordinators acting on the same state write the same id and only the first
    /// counts.
    pub id: String,
    /// The incident.
    pub incident: String,
    /// `acknowledge`, `confirm`, `reject`, `retract` or `resolve`.
    pub action: String,
    /// What happened, for a platform reading the topic: `acknowledged`, `confirmed`,
    /// `rejected`, `retracted`, `resolved`.
    pub event: String,
    /// Who (tenant and credential).
    pub who: String,
    /// The acting tenant.
    pub tenant: String,
    /// Wall ms.
    pub at_ms: u64,
    /// The streams of the incident then (`tenant/stream`): what a platform acts on.
    #[serde(default)]
    pub streams: Vec<String>,
    /// Bank keys published (confirm) or removed (retract).
    #[serde(default)]
    pub entries: Vec<String>,
    /// Hashes published (confirm: crisis bank; reject: negative bank), hex.
    #[serde(default)]
    pub hashes: Vec<String>,
    /// The responder's note.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub note: Option<String>,
    /// vPDQ video entries published (confirm, promote) or removed (retract).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub videos: Vec<VideoRecord>,
    /// The tenant the published entries are scoped to (confirm, reject by a tenant's
    /// responder); absent: fleet-wide (an admin's confirmation, or a promotion).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub scope: Option<String>,
}

/// The past tense of an action, as events name it.
pub fn event_name(a: Action) -> &'static str {
    match a {
        Action::Acknowledge => "acknowledged",
        Action::Confirm => "confirmed",
        Action::Reject => "rejected",
        Action::Retract => "retracted",
        Action::Resolve => "resolved",
        Action::Promote => "promoted",
    }
}

/// An action's name in requests and records.
pub fn parse_action(s: &str) -> Option<Action> {
    Some(match s {
        "acknowledge" => Action::Acknowledge,
        "confirm" => Action::Confirm,
        "reject" => Action::Reject,
        "retract" => Action::Retract,
        "resolve" => Action::Resolve,
        "promote" => Action::Promote,
        _ => return None,
    })
}

/// What a platform's webhook hears about.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Notice {
    /// A new incident.
    Opened(String),
    /// Incident `from` turned out to be the same content as `into`, and was folded in.
    Merged {
        /// The incident kept.
        into: String,
        /// The incident gone.
        from: String,
    },
}

/// A vPDQ video entry a confirmation published: one stream's guarded frames.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct VideoRecord {
    /// Its bank key (`bank/id`).
    pub key: String,
    /// The stream (`tenant/stream`).
    pub stream: String,
    /// Its frames: (media ms, PDQ hash hex, quality), in media order.
    pub frames: Vec<(u64, String, u8)>,
}

/// A frame entry a confirmation published.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct PublishedEntry {
    /// Its bank key (`bank/id`).
    pub key: String,
    /// Its PDQ hash, hex.
    pub hash: String,
}

/// What a confirmation published.
#[derive(Debug, Clone, Default, PartialEq, Serialize)]
pub struct Published {
    /// Frame entries.
    pub entries: Vec<PublishedEntry>,
    /// Video entries.
    pub videos: Vec<VideoRecord>,
    /// The tenant whose streams they match (`None`: every tenant's).
    pub scope: Option<String>,
}

/// Counters of what was read.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize)]
pub struct Counts {
    /// Escalation events applied.
    pub escalations: u64,
    /// Escalation events that could not be read.
    pub bad_escalations: u64,
    /// Frame signals read.
    pub frames: u64,
    /// Signal blocks that could not be read.
    pub bad_signals: u64,
    /// Actions applied.
    pub actions: u64,
    /// Actions refused on apply (conflicting state; a duplicate id).
    pub refused_actions: u64,
}

/// The coordinator's state.
#[derive(Debug)]
pub struct Hub {
    cfg: CoordinatorConfig,
    incidents: Incidents,
    links: ContentLinks,
    history: HashMap<StreamKey, VecDeque<FrameSignal>>,
    /// The earliest media start (ms) of each stream's escalations.
    media_start: HashMap<StreamKey, u64>,
    /// Streams whose own policy escalated.
    escalated: HashSet<StreamKey>,
    published: BTreeMap<String, Published>,
    negatives: Vec<Hash256>,
    applied: HashSet<String>,
    seen: HashSet<String>,
    seen_order: VecDeque<String>,
    /// Actions read before their incident (topics interleave): retried.
    pending: Vec<ActionRecord>,
    now_ms: u64,
    counts: Counts,
    /// Incidents opened or merged since the last [`Hub::take_notices`].
    notices: Vec<Notice>,
    /// Evidence thumbnails named by each stream's escalations.
    thumbs: HashMap<StreamKey, VecDeque<Thumb>>,
    /// Thumbnails of confirmed incidents: preserved, also when they arrive later.
    preserve: HashSet<String>,
    /// Newly in `preserve`, for [`Hub::take_preserve`].
    to_preserve: Vec<String>,
    /// Which confirmed incident published each bank key (`bank/id`).
    entry_owner: HashMap<String, String>,
    /// The evidence each confirmation was made on: the banked reference frames.
    confirmed_thumbs: HashMap<String, Vec<(StreamKey, Thumb)>>,
    /// Every action read from the log, oldest first (the latest [`AUDIT_KEPT`]).
    audit: VecDeque<AuditRow>,
    /// Each stream's risk timeline, kept as long as its frames.
    risk: HashMap<StreamKey, VecDeque<RiskPoint>>,
    /// When per-stream state of streams in no incident was last dropped (wall ms).
    pruned_ms: u64,
}

fn kind_of(s: &str) -> Option<DecisionKind> {
    Some(match s {
        "escalated" => DecisionKind::Escalated,
        "updated" => DecisionKind::Updated,
        "deescalated" => DecisionKind::Deescalated,
        "ended" => DecisionKind::Ended,
        _ => return None,
    })
}

/// Audit rows kept (the latest); the incident log on the broker holds them all.
const AUDIT_KEPT: usize = 10_000;

/// One responder action as the audit shows it.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct AuditRow {
    /// The action record's id.
    pub id: String,
    /// The incident.
    pub incident: String,
    /// What was asked.
    pub action: String,
    /// `applied`, or `refused` (the incident's state did not allow it when read back).
    pub outcome: &'static str,
    /// Who (tenant and credential).
    pub who: String,
    /// The acting tenant.
    pub tenant: String,
    /// When, Unix ms.
    pub at_ms: u64,
    /// The incident's streams then (`tenant/stream`).
    pub streams: Vec<String>,
    /// Bank entries published or removed (frame and video entries).
    pub entries: usize,
    /// Their scope (`None`: fleet-wide).
    pub scope: Option<String>,
    /// The responder's note.
    pub note: Option<String>,
}

/// A point of a stream's risk timeline: the strongest signal of one sampled frame (a
/// hash match counts 1; a live video match its fraction; a classifier its score), as
/// the worker's dashboard plots it.
#[derive(Debug, Clone, Copy, PartialEq, Serialize)]
pub struct RiskPoint {
    /// Wall ms.
    pub wall_ms: u64,
    /// Media ms.
    pub media_ms: u64,
    /// 0 to 1.
    pub score: f32,
}

/// Points a timeline shows at most (the strongest of each run of frames).
pub const TIMELINE_POINTS: usize = 120;

/// Evidence thumbnails kept per stream (the latest).
const THUMBS_PER_STREAM: usize = 64;

/// An evidence thumbnail an escalation named.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Thumb {
    /// Where it is served (`/v1/thumbnails/<id>`).
    pub reference: String,
    /// The decision id.
    pub id: String,
    /// The decision's wall time, ms.
    pub wall_ms: u64,
    /// The tier then.
    pub tier: String,
}

/// An escalation CloudEvent as the coordinator reads it, with the media time its
/// incident started at (ms) and its evidence thumbnail's decision id.
pub fn parse_escalation(
    payload: &[u8],
) -> Result<(Escalation, Option<u64>, Option<String>), String> {
    let v: Value = serde_json::from_slice(payload).map_err(|e| format!("not JSON: {e}"))?;
    let d = &v["data"];
    let text = |x: &Value, what: &str| {
        x.as_str()
            .map(str::to_owned)
            .ok_or_else(|| format!("missing {what}"))
    };
    let kind = text(&d["kind"], "data.kind")?;
    let wall_ms = parse_time(v["time"].as_str().unwrap_or_default())
        .ok_or_else(|| "missing or malformed time".to_owned())?;
    let entries = d["evidence"]
        .as_array()
        .map(|ev| {
            ev.iter()
                .filter_map(|e| {
                    Some(BankEntry {
                        bank: e["bank"].as_str()?.to_owned(),
                        entry: e["entry_id"].as_str()?.to_owned(),
                    })
                })
                .collect()
        })
        .unwrap_or_default();
    let media_start = d["media_time"]["start"]
        .as_f64()
        .filter(|s| s.is_finite() && *s >= 0.0)
        .map(|s| (s * 1000.0) as u64);
    // Only a reference of the form workers write: another value names no file here.
    let thumbnail = d["thumbnail"]
        .as_str()
        .and_then(|t| t.strip_prefix("/v1/thumbnails/"))
        .filter(|id| crate::evidence::valid_id(id))
        .map(str::to_owned);
    Ok((
        Escalation {
            id: text(&v["id"], "id")?,
            stream: StreamKey::new(
                text(&d["tenant"], "data.tenant")?,
                text(&d["stream_id"], "data.stream_id")?,
            ),
            worker: d["worker_id"].as_str().unwrap_or_default().to_owned(),
            stream_incident: text(&d["incident_id"], "data.incident_id")?,
            kind: kind_of(&kind).ok_or_else(|| format!("unknown kind {kind:?}"))?,
            tier: text(&d["tier"], "data.tier")?,
            activation: d["activation"].as_str().map(str::to_owned),
            wall_ms,
            entries,
            rules: d["rules"]
                .as_array()
                .map(|r| {
                    r.iter()
                        .filter_map(|x| x.as_str().map(str::to_owned))
                        .collect()
                })
                .unwrap_or_default(),
        },
        media_start,
        thumbnail,
    ))
}

impl Hub {
    /// Nothing read yet.
    pub fn new(cfg: CoordinatorConfig, tiers: Vec<String>) -> Hub {
        let links = ContentLinks::new(LinkConfig {
            max_distance: cfg.match_distance,
            min_quality: cfg.min_quality,
            min_span_ms: (cfg.link_min_span_secs * 1000.0) as u64,
            ..LinkConfig::default()
        });
        let incidents = Incidents::new(IncidentConfig {
            tiers,
            spread_min_streams: cfg.spread_min_streams,
            ..IncidentConfig::default()
        });
        Hub {
            cfg,
            incidents,
            links,
            history: HashMap::new(),
            media_start: HashMap::new(),
            escalated: HashSet::new(),
            published: BTreeMap::new(),
            negatives: Vec::new(),
            applied: HashSet::new(),
            seen: HashSet::new(),
            seen_order: VecDeque::new(),
            pending: Vec::new(),
            now_ms: 0,
            counts: Counts::default(),
            notices: Vec::new(),
            thumbs: HashMap::new(),
            preserve: HashSet::new(),
            to_preserve: Vec::new(),
            entry_owner: HashMap::new(),
            confirmed_thumbs: HashMap::new(),
            audit: VecDeque::new(),
            risk: HashMap::new(),
            pruned_ms: 0,
        }
    }

    /// The incidents.
    pub fn incidents(&self) -> &Incidents {
        &self.incidents
    }

    /// What each confirmed incident published.
    pub fn published(&self, incident: &str) -> Option<&Published> {
        self.published.get(incident)
    }

    /// Whether action `id` has been applied (or refused) from the log.
    pub fn has_applied(&self, id: &str) -> bool {
        self.applied.contains(id)
    }

    /// Counters.
    pub fn counts(&self) -> Counts {
        self.counts
    }

    /// The latest wall time read.
    pub fn now_ms(&self) -> u64 {
        self.now_ms
    }

    /// Frames kept for `stream`.
    pub fn frames_of(&self, stream: &StreamKey) -> usize {
        self.history.get(stream).map_or(0, VecDeque::len)
    }

    /// An escalation event (a CloudEvent's JSON).
    pub fn on_escalation(&mut self, payload: &[u8]) {
        let (e, media_start, thumbnail) = match parse_escalation(payload) {
            Ok(x) => x,
            Err(err) => {
                self.counts.bad_escalations += 1;
                tracing::warn!(error = %err, "coordinator: unreadable escalation");
                return;
            }
        };
        // Redelivered events carry the same deterministic id.
        if !self.seen.insert(e.id.clone()) {
            return;
        }
        self.seen_order.push_back(e.id.clone());
        while self.seen_order.len() > SEEN_IDS {
            if let Some(old) = self.seen_order.pop_front() {
                self.seen.remove(&old);
            }
        }
        self.counts.escalations += 1;
        self.now_ms = self.now_ms.max(e.wall_ms);
        if matches!(e.kind, DecisionKind::Escalated | DecisionKind::Updated) {
            self.escalated.insert(e.stream.clone());
            if let Some(m) = media_start {
                let at = self.media_start.entry(e.stream.clone()).or_insert(m);
                *at = (*at).min(m);
            }
        }
        let changes = self.incidents.on_escalation(&e, &self.links);
        tracing::debug!(stream = %e.stream, ?changes, "coordinator: escalation");
        if let Some(id) = thumbnail {
            let t = self.thumbs.entry(e.stream.clone()).or_default();
            t.push_back(Thumb {
                reference: crate::evidence::reference(&id),
                id: id.clone(),
                wall_ms: e.wall_ms,
                tier: e.tier.clone(),
            });
            while t.len() > THUMBS_PER_STREAM {
                t.pop_front();
            }
            // Evidence of a copy joining a confirmed incident is preserved too.
            if self
                .incidents
                .of_stream(&e.stream)
                .is_some_and(|i| i.state == State::Confirmed)
                && self.preserve.insert(id.clone())
            {
                self.to_preserve.push(id);
            }
        }
        self.note_opened(&changes);
        self.retry_pending();
    }

    /// A block of signal records from `firebreak.signals`.
    pub fn on_signals(&mut self, payload: &[u8]) {
        match decode_block(payload) {
            Ok(records) => self.on_signal_records(records),
            Err(e) => self.unreadable_signals(&e),
        }
    }

    /// Counts a signal block that could not be decoded.
    pub fn unreadable_signals(&mut self, e: &dyn std::fmt::Display) {
        self.counts.bad_signals += 1;
        tracing::warn!(error = %e, "coordinator: unreadable signal block");
    }

    /// The records of one block of the signals topic, decoded.
    pub fn on_signal_records(&mut self, records: Vec<SignalRecord>) {
        for r in records {
            match r {
                SignalRecord::Frame(f) => {
                    let point = RiskPoint {
                        wall_ms: f.signals.wall_ms,
                        media_ms: (f.signals.media_time.max(0.0) * 1000.0) as u64,
                        score: crate::engine::detect::score(&f.signals) as f32,
                    };
                    let key = StreamKey::new(f.tenant.clone(), f.stream.clone());
                    let keep_ms = (self.cfg.history_secs * 1000.0) as u64;
                    let r = self.risk.entry(key).or_default();
                    r.push_back(point);
                    while r.len() > MAX_HISTORY_FRAMES
                        || r.front()
                            .is_some_and(|o| point.wall_ms.saturating_sub(o.wall_ms) > keep_ms)
                    {
                        r.pop_front();
                    }
                    let Some((bytes, quality)) = f.pdq else {
                        continue;
                    };
                    let sig = FrameSignal {
                        stream: StreamKey::new(f.tenant, f.stream),
                        wall_ms: f.signals.wall_ms,
                        media_ms: (f.signals.media_time.max(0.0) * 1000.0) as u64,
                        hash: Hash256::from_bytes(&bytes),
                        quality,
                    };
                    self.on_frame(sig);
                }
                // An ended stream's links stay until the window expires them: its
                // escalation may be read after its last frames (the topics
                // interleave), and must still find the streams it was linked to.
                SignalRecord::Event(_) => {}
                SignalRecord::Tick { wall_ms } => self.tick(wall_ms),
            }
        }
    }

    /// The workers' once-a-second tick: expires content links, and forgets the frames
    /// of streams silent for longer than `history_secs` (ended or moved away), so
    /// memory follows the live streams, not every stream ever seen.
    pub fn tick(&mut self, wall_ms: u64) {
        self.now_ms = self.now_ms.max(wall_ms);
        self.links.expire(self.now_ms);
        let keep_ms = (self.cfg.history_secs * 1000.0) as u64;
        let now = self.now_ms;
        self.history.retain(|_, h| {
            h.back()
                .is_some_and(|f| now.saturating_sub(f.wall_ms) <= keep_ms)
        });
        self.risk.retain(|_, r| {
            r.back()
                .is_some_and(|p| now.saturating_sub(p.wall_ms) <= keep_ms)
        });
        // Once a minute: what is kept per stream for its incident (evidence, first
        // escalation) goes with the incident (resolved ones are bounded by the
        // incidents' own limit), so memory follows the incidents, not every stream
        // that ever escalated.
        if now.saturating_sub(self.pruned_ms) >= 60_000 {
            self.pruned_ms = now;
            let members: HashSet<&StreamKey> = self
                .incidents
                .list()
                .into_iter()
                .flat_map(|i| i.streams.keys())
                .collect();
            self.thumbs.retain(|s, _| members.contains(s));
            self.escalated.retain(|s| members.contains(s));
            self.media_start.retain(|s, _| members.contains(s));
        }
    }

    /// `stream`'s risk timeline, at most [`TIMELINE_POINTS`] points: runs of frames
    /// folded into their strongest, in media order.
    pub fn timeline(&self, stream: &StreamKey) -> Vec<RiskPoint> {
        let Some(r) = self.risk.get(stream) else {
            return Vec::new();
        };
        let per = r.len().div_ceil(TIMELINE_POINTS).max(1);
        let points: Vec<RiskPoint> = r.iter().copied().collect();
        points
            .chunks(per)
            .map(|run| {
                let strongest = run
                    .iter()
                    .max_by(|a, b| a.score.total_cmp(&b.score))
                    .expect("chunks are not empty");
                RiskPoint {
                    media_ms: run[0].media_ms,
                    ..*strongest
                }
            })
            .collect()
    }

    fn on_frame(&mut self, f: FrameSignal) {
        self.counts.frames += 1;
        self.now_ms = self.now_ms.max(f.wall_ms);
        let keep_ms = (self.cfg.history_secs * 1000.0) as u64;
        let h = self.history.entry(f.stream.clone()).or_default();
        h.push_back(f.clone());
        while h.len() > MAX_HISTORY_FRAMES
            || h.front()
                .is_some_and(|o| f.wall_ms.saturating_sub(o.wall_ms) > keep_ms)
        {
            h.pop_front();
        }
        for l in self.links.observe(&f) {
            let changes = self.incidents.on_link(&l, &self.links, f.wall_ms);
            self.note_opened(&changes);
            if !changes.is_empty() {
                tracing::info!(a = %l.a, b = %l.b, ?changes, "coordinator: content link");
            }
        }
    }

    /// What confirming `incident` would publish now: the frames of its escalated
    /// streams from `lookback_secs` before their first escalation on, through the
    /// guards. Frames that also occur on `common_streams` or more streams that did not
    /// escalate (unrelated streams, or streams linked only by a shared intro) are
    /// common and dropped.
    pub fn preview(&self, incident: &str) -> Option<Preview> {
        let inc = self.incidents.get(incident)?;
        let lookback = (self.cfg.lookback_secs * 1000.0) as u64;
        let mut candidates = Vec::new();
        for s in inc.streams.keys().filter(|s| self.escalated.contains(*s)) {
            let from = self
                .media_start
                .get(s)
                .map_or(0, |m| m.saturating_sub(lookback));
            for f in self.history.get(s).into_iter().flatten() {
                if f.media_ms >= from {
                    candidates.push(Candidate {
                        stream: s.clone(),
                        media_ms: f.media_ms,
                        hash: f.hash,
                        quality: f.quality,
                    });
                }
            }
        }
        let guards = Guards {
            min_quality: self.cfg.min_quality,
            match_distance: self.cfg.match_distance,
            common_streams: self.cfg.common_streams,
            max_entries: self.cfg.max_entries,
            ..Guards::default()
        };
        let d = self.cfg.match_distance;
        let outside: Vec<&VecDeque<FrameSignal>> = self
            .history
            .iter()
            .filter(|(s, _)| !self.escalated.contains(*s))
            .map(|(_, h)| h)
            .collect();
        Some(confirm::select(
            &candidates,
            &guards,
            |h| {
                outside
                    .iter()
                    .filter(|frames| frames.iter().any(|f| f.hash.distance(h) <= d))
                    .count()
            },
            |h| self.negatives.iter().any(|n| n.distance(h) <= d),
        ))
    }

    fn audit_row(&mut self, r: &ActionRecord, outcome: &'static str) {
        self.audit.push_back(AuditRow {
            id: r.id.clone(),
            incident: r.incident.clone(),
            action: r.action.clone(),
            outcome,
            who: r.who.clone(),
            tenant: r.tenant.clone(),
            at_ms: r.at_ms,
            streams: r.streams.clone(),
            entries: r.entries.len() + r.videos.len(),
            scope: r.scope.clone(),
            note: r.note.clone(),
        });
        while self.audit.len() > AUDIT_KEPT {
            self.audit.pop_front();
        }
    }

    /// The audit of responder actions, newest first.
    pub fn audit(&self) -> impl Iterator<Item = &AuditRow> {
        self.audit.iter().rev()
    }

    /// A record of the incidents topic.
    pub fn on_action(&mut self, record: ActionRecord) {
        self.now_ms = self.now_ms.max(record.at_ms);
        if self.applied.contains(&record.id) {
            return;
        }
        // A confirmation's keys and hashes go pairwise: a record where they do not
        // is refused whole (never written by a coordinator).
        let action = parse_action(&record.action)
            .filter(|a| *a != Action::Confirm || record.entries.len() == record.hashes.len());
        let Some(action) = action else {
            tracing::warn!(action = %record.action, "coordinator: unknown or malformed action in the log");
            self.audit_row(&record, "refused");
            self.applied.insert(record.id);
            self.counts.refused_actions += 1;
            return;
        };
        match self
            .incidents
            .act(&record.incident, action, &record.who, record.at_ms)
        {
            Ok(_) => {
                self.counts.actions += 1;
                self.audit_row(&record, "applied");
                let hashes = || {
                    record
                        .hashes
                        .iter()
                        .filter_map(|h| h.parse::<Hash256>().ok())
                };
                match action {
                    Action::Confirm => {
                        // Copies matching the published entries join this incident.
                        let keys = record
                            .entries
                            .iter()
                            .chain(record.videos.iter().map(|v| &v.key));
                        let entries = keys.filter_map(|k| {
                            let (bank, entry) = k.split_once('/')?;
                            Some(BankEntry {
                                bank: bank.to_owned(),
                                entry: entry.to_owned(),
                            })
                        });
                        self.incidents.claim_entries(&record.incident, entries);
                        for k in record
                            .entries
                            .iter()
                            .chain(record.videos.iter().map(|v| &v.key))
                        {
                            self.entry_owner.insert(k.clone(), record.incident.clone());
                        }
                        let thumbs = self.thumbs_of(&record.incident);
                        let ids: Vec<String> = thumbs.iter().map(|(_, t)| t.id.clone()).collect();
                        self.confirmed_thumbs
                            .insert(record.incident.clone(), thumbs);
                        for id in ids {
                            if self.preserve.insert(id.clone()) {
                                self.to_preserve.push(id);
                            }
                        }
                        self.published.insert(
                            record.incident.clone(),
                            Published {
                                entries: record
                                    .entries
                                    .iter()
                                    .zip(&record.hashes)
                                    .map(|(key, hash)| PublishedEntry {
                                        key: key.clone(),
                                        hash: hash.clone(),
                                    })
                                    .collect(),
                                videos: record.videos.clone(),
                                scope: record.scope.clone(),
                            },
                        );
                    }
                    Action::Retract => {
                        // Its evidence stays preserved: a retraction is itself on
                        // the record.
                        if let Some(p) = self.published.remove(&record.incident) {
                            for k in p
                                .entries
                                .iter()
                                .map(|e| &e.key)
                                .chain(p.videos.iter().map(|v| &v.key))
                            {
                                self.entry_owner.remove(k);
                            }
                        }
                    }
                    Action::Reject => {
                        let h: Vec<Hash256> = hashes().collect();
                        self.links.suppress(h.iter().copied());
                        self.negatives.extend(h);
                    }
                    Action::Promote => {
                        if let Some(p) = self.published.get_mut(&record.incident) {
                            p.scope = None;
                        }
                    }
                    Action::Acknowledge | Action::Resolve => {}
                }
                self.applied.insert(record.id);
            }
            Err(ActionError::NotFound) => self.pending.push(record),
            Err(ActionError::Conflict(state)) => {
                tracing::info!(id = %record.id, ?state, "coordinator: action refused on apply");
                self.counts.refused_actions += 1;
                self.audit_row(&record, "refused");
                self.applied.insert(record.id);
            }
        }
    }

    fn retry_pending(&mut self) {
        if self.pending.is_empty() {
            return;
        }
        for r in std::mem::take(&mut self.pending) {
            if self.incidents.get(&r.incident).is_some() {
                self.on_action(r);
            } else {
                self.pending.push(r);
            }
        }
    }

    fn note_opened(&mut self, changes: &[firebreak_coordinator::incidents::Change]) {
        use firebreak_coordinator::incidents::Change;
        for c in changes {
            match c {
                Change::Opened(id) => self.notices.push(Notice::Opened(id.clone())),
                Change::Merged { into, from } => self.notices.push(Notice::Merged {
                    into: into.clone(),
                    from: from.clone(),
                }),
                _ => {}
            }
        }
    }

    /// The evidence thumbnails of `incident`'s streams, oldest first per stream.
    pub fn thumbs_of(&self, incident: &str) -> Vec<(StreamKey, Thumb)> {
        let Some(inc) = self.incidents.get(incident) else {
            return Vec::new();
        };
        inc.streams
            .keys()
            .flat_map(|s| {
                self.thumbs
                    .get(s)
                    .into_iter()
                    .flatten()
                    .map(move |t| (s.clone(), t.clone()))
            })
            .collect()
    }

    /// The confirmed incident that published bank key `key` (`bank/id`).
    pub fn entry_owner(&self, key: &str) -> Option<&str> {
        self.entry_owner.get(key).map(String::as_str)
    }

    /// The evidence thumbnails confirmed incident `incident` was confirmed on.
    pub fn confirmed_thumbs(&self, incident: &str) -> &[(StreamKey, Thumb)] {
        self.confirmed_thumbs
            .get(incident)
            .map_or(&[], Vec::as_slice)
    }

    /// Whether thumbnail `id` belongs to a confirmed incident (keep it preserved).
    pub fn should_preserve(&self, id: &str) -> bool {
        self.preserve.contains(id)
    }

    /// Thumbnails newly belonging to a confirmed incident since the last call.
    pub fn take_preserve(&mut self) -> Vec<String> {
        std::mem::take(&mut self.to_preserve)
    }

    /// What to tell a platform since the last call, oldest first.
    pub fn take_notices(&mut self) -> Vec<Notice> {
        std::mem::take(&mut self.notices)
    }

    /// The id the next action on `incident` gets.
    pub fn next_action_id(&self, incident: &str) -> Option<String> {
        let inc = self.incidents.get(incident)?;
        Some(format!("{incident}/{}", inc.history.len()))
    }

    /// Whether `action` is allowed on `incident` now.
    pub fn allowed(&self, incident: &str, action: Action) -> Result<State, ActionError> {
        self.incidents.allowed(incident, action)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn frame(stream: &str, wall_ms: u64) -> FrameSignal {
        FrameSignal {
            stream: StreamKey::new("t", stream),
            wall_ms,
            media_ms: wall_ms,
            hash: Hash256::default(),
            quality: 100,
        }
    }

    /// Two streams carrying the same content end before the coordinator reads their
    /// escalations (the topics interleave): their link, formed from their frames,
    /// still puts both in one incident.
    #[test]
    fn streams_linked_before_their_escalations_are_read_share_an_incident() {
        use crate::signals::record::{EventKind, EventRecord, FrameRecord, encode_block};
        let mut hub = Hub::new(CoordinatorConfig::default(), vec!["review".into()]);
        // Content: 30 unrelated hashes (splitmix64 bits), 0.5 s apart.
        let content: Vec<Hash256> = (0..30u64)
            .map(|i| {
                let mut h = Hash256::default();
                let mut x = i.wrapping_mul(0x9E37_79B9_7F4A_7C15) ^ 0xD1B5_4A32_D192_ED03;
                for k in 0..256 {
                    x ^= x >> 31;
                    x = x.wrapping_mul(0xBF58_476D_1CE4_E5B9);
                    if x >> 63 == 1 {
                        h.set_bit(k);
                    }
                }
                h
            })
            .collect();
        let mut block = Vec::new();
        for (i, h) in content.iter().enumerate() {
            for s in ["a", "b"] {
                block.push(SignalRecord::Frame(FrameRecord {
                    stream: s.into(),
                    tenant: "t".into(),
                    pdq: Some((h.to_bytes(), 90)),
                    signals: firebreak_policy::policy::FrameSignals {
                        media_time: i as f64 * 0.5,
                        wall_ms: 1_000 + i as u64 * 10,
                        ..Default::default()
                    },
                }));
            }
        }
        for s in ["a", "b"] {
            block.push(SignalRecord::Event(EventRecord {
                stream: s.into(),
                tenant: "t".into(),
                kind: EventKind::Ended,
                wall_ms: 1_400,
            }));
        }
        hub.on_signals(&encode_block(&block));
        for s in ["a", "b"] {
            let event = serde_json::json!({
                "id": format!("e-{s}"), "time": "2026-11-28T15:01:46.000Z",
                "data": {"kind": "escalated", "tenant": "t", "stream_id": s,
                         "incident_id": format!("i-{s}"), "tier": "review",
                         "worker_id": "w", "evidence": [], "rules": ["r"],
                         "media_time": {"start": 3.0, "end": 3.0}}
            });
            hub.on_escalation(&serde_json::to_vec(&event).unwrap());
        }
        let list = hub.incidents().list();
        assert_eq!(list.len(), 1, "{list:?}");
        assert_eq!(list[0].streams.len(), 2);
    }

    #[test]
    fn silent_streams_frames_are_forgotten_after_history_secs() {
        let cfg = CoordinatorConfig {
            history_secs: 10.0,
            ..CoordinatorConfig::default()
        };
        let mut hub = Hub::new(cfg, vec!["review".into()]);
        hub.on_frame(frame("ended", 1_000));
        hub.on_frame(frame("ended", 2_000));
        hub.on_frame(frame("live", 1_000));
        hub.on_frame(frame("live", 11_500));
        hub.tick(12_000);
        // 10 s since "ended"'s last frame: kept; "live" too.
        assert_eq!(hub.frames_of(&StreamKey::new("t", "ended")), 2);
        hub.tick(12_001);
        assert_eq!(hub.frames_of(&StreamKey::new("t", "ended")), 0);
        // "live"'s frame at 1 s was trimmed when 11.5 s arrived; the last one stays
        // until 10 s after it.
        assert_eq!(hub.frames_of(&StreamKey::new("t", "live")), 1);
        hub.tick(21_500);
        assert_eq!(hub.frames_of(&StreamKey::new("t", "live")), 1);
        hub.tick(21_501);
        assert_eq!(hub.frames_of(&StreamKey::new("t", "live")), 0);
    }
}

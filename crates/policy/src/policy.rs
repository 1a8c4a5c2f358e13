//! The escalation policy: per-stream state that turns per-frame signals into a few
//! decisions (escalated, updated, de-escalated, ended) instead of a flood of scores.
//!
//! Per rule and stream:
//! - each sampled frame gives the rule a value (1/0 for a hash match, the window
//!   percentage / 100 for a live video match, the score for a classifier), smoothed
//!   exponentially (`smoothing` = weight of the newest value);
//! - the rule becomes **active** when `k` of the last `n` frames within `within_secs` of
//!   media time had a smoothed value at or above `enter`;
//! - it stays active while some frame within `hold_secs` (wall time) is at or above
//!   `exit` (hysteresis: `exit <= enter`).
//!
//! The stream's tier is the highest tier of its active rules. Raising it is immediate
//! (a crisis-bank match escalates on the first frame); lowering it waits until
//! `cooldown_secs` after the previous change, so the tier never flaps faster than the
//! cooldown. While the tier holds, new evidence produces at most one update per
//! `update_interval_secs`. Every decision carries the policy version and the evidence
//! behind it, and a deterministic id (same inputs, same ids), so a redelivered event can
//! be dropped downstream. No clock is read here: wall time comes in with each input.

use std::collections::{BTreeSet, VecDeque};

use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};

use crate::config::{PolicyConfig, RuleKind};

/// A PDQ match of a frame.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct HashMatch {
    /// Bank name.
    pub bank: String,
    /// Entry id.
    pub entry_id: String,
    /// Hamming distance.
    pub distance: u32,
    /// Quality of the frame's hash.
    pub quality: u8,
    /// Which view matched, when not the whole frame against a whole banked frame:
    /// the frame's view (`full/flipx`, `trimmed`, `centre60`...) and, after `~`, the
    /// banked entry's view (`centre90`...).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub view: Option<String>,
}

/// A live vPDQ window match.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct VideoMatch {
    /// Bank name.
    pub bank: String,
    /// Entry id.
    pub entry_id: String,
    /// Query-match percentage over the window.
    pub percent: f64,
}

/// A classifier's score for a policy category.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct ClassifierScore {
    /// Policy category.
    pub category: String,
    /// Score, 0..=1.
    pub score: f64,
    /// Model name.
    pub model: String,
    /// Model version (e.g. its sha256 prefix).
    pub model_version: String,
}

/// Everything the detectors said about one sampled frame.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct FrameSignals {
    /// Media time of the frame (seconds).
    pub media_time: f64,
    /// Wall-clock time the frame arrived (milliseconds since the Unix epoch).
    pub wall_ms: u64,
    /// PDQ matches.
    pub hash_matches: Vec<HashMatch>,
    /// Live video window matches.
    pub video_matches: Vec<VideoMatch>,
    /// Classifier scores.
    pub scores: Vec<ClassifierScore>,
}

/// A stream lifecycle event.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum StreamEvent {
    /// The stream (re)started: rule state starts afresh.
    Started,
    /// No frames for a while (the ingest watchdog's verdict).
    Stalled,
    /// The stream ended: an open incident is closed.
    Ended,
}

/// One piece of evidence behind a decision.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[serde(tag = "type", rename_all = "snake_case")]
pub enum Evidence {
    /// A PDQ match.
    HashMatch {
        /// The rule it satisfied.
        rule: String,
        /// Media time of the frame.
        media_time: f64,
        /// The match.
        #[serde(flatten)]
        matched: HashMatch,
    },
    /// A live video window match.
    VideoMatch {
        /// The rule it satisfied.
        rule: String,
        /// Media time of the frame.
        media_time: f64,
        /// The match.
        #[serde(flatten)]
        matched: VideoMatch,
    },
    /// A classifier score.
    Classifier {
        /// The rule it satisfied.
        rule: String,
        /// Media time of the frame.
        media_time: f64,
        /// The smoothed value the rule compared.
        smoothed: f64,
        /// The raw score.
        #[serde(flatten)]
        score: ClassifierScore,
    },
}

impl Evidence {
    /// What makes two pieces of evidence "the same" for update purposes: the rule and
    /// the bank entry or model, not the frame.
    fn key(&self) -> String {
        match self {
            Evidence::HashMatch { rule, matched, .. } => {
                format!("{rule}/{}/{}", matched.bank, matched.entry_id)
            }
            Evidence::VideoMatch { rule, matched, .. } => {
                format!("{rule}/{}/{}", matched.bank, matched.entry_id)
            }
            Evidence::Classifier { rule, score, .. } => {
                format!("{rule}/{}/{}", score.model, score.model_version)
            }
        }
    }
}

/// What a decision says happened.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum DecisionKind {
    /// The tier went up (an incident opened, or got worse).
    Escalated,
    /// Same tier, new evidence.
    Updated,
    /// The tier went down (to `none`: the incident closed).
    Deescalated,
    /// The stream ended during an incident.
    Ended,
}

/// A policy decision about one stream.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Decision {
    /// Deterministic id: the same stream, incident and sequence give the same id.
    pub id: String,
    /// The stream.
    pub stream_id: String,
    /// The incident this decision belongs to (from its first escalation to its close).
    pub incident_id: String,
    /// Position of this decision in its incident (0, 1, ...).
    pub sequence: u64,
    /// What happened.
    pub kind: DecisionKind,
    /// The tier now (`none` when the incident closed).
    pub tier: String,
    /// The tier before.
    pub previous_tier: String,
    /// The highest activation type the tier reaches, if any.
    pub activation: Option<String>,
    /// Media time of the incident's first evidence frame.
    pub media_start: f64,
    /// Media time of the frame that caused this decision.
    pub media_end: f64,
    /// Wall time of the decision (ms since the Unix epoch).
    pub wall_ms: u64,
    /// The active rules.
    pub rules: Vec<String>,
    /// The evidence behind it.
    pub evidence: Vec<Evidence>,
    /// The effective policy version.
    pub policy_version: String,
}

/// A validated policy, ready to evaluate streams.
#[derive(Debug, Clone)]
pub struct Policy {
    config: PolicyConfig,
    version: String,
    rule_tiers: Vec<usize>,
}

impl Policy {
    /// Prepares a validated configuration. The effective version is the operator's
    /// label plus a digest of the whole configuration, so any change shows.
    pub fn new(config: PolicyConfig) -> Policy {
        let digest = Sha256::digest(format!("{config:?}").as_bytes());
        let version = format!("{}+{}", config.version, hex(&digest[..4]));
        let rule_tiers = config
            .rules
            .iter()
            .map(|r| {
                config
                    .tier_index(&r.tier)
                    .expect("validated: rule tiers exist")
            })
            .collect();
        Policy {
            config,
            version,
            rule_tiers,
        }
    }

    /// The effective version (label + digest).
    pub fn version(&self) -> &str {
        &self.version
    }

    /// The configuration.
    pub fn config(&self) -> &PolicyConfig {
        &self.config
    }

    fn tier_name(&self, tier: Option<usize>) -> String {
        tier.map_or_else(|| "none".to_owned(), |t| self.config.tiers[t].clone())
    }

    fn activation(&self, tier: Option<usize>) -> Option<String> {
        let tier = tier?;
        self.config
            .activations
            .iter()
            .filter_map(|a| {
                let min = self.config.tier_index(&a.min_tier)?;
                (min <= tier).then_some((min, &a.name))
            })
            .max_by_key(|(min, _)| *min)
            .map(|(_, name)| name.clone())
    }
}

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

/// Most evidence items a rule keeps (the most recent).
const EVIDENCE_PER_RULE: usize = 8;

#[derive(Debug, Clone, Default, Serialize, Deserialize)]
struct RuleState {
    smoothed: Option<f64>,
    /// (media time, counted) of the last `n` frames.
    recent: VecDeque<(f64, bool)>,
    active: bool,
    /// Wall time of the last frame at or above the exit level while active.
    last_ok_ms: u64,
    evidence: VecDeque<Evidence>,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
struct Incident {
    id: String,
    started_ms: u64,
    media_start: f64,
    next_sequence: u64,
    reported: BTreeSet<String>,
}

/// One stream's policy state. Serialisable (serde), so a stream that moves to another
/// worker keeps its incident, windows and cool-down; the JSON form is versioned by the
/// record that carries it (fleet mode's `firebreak.stream-state`).
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct StreamState {
    stream_id: String,
    rules: Vec<RuleState>,
    tier: Option<usize>,
    last_change_ms: u64,
    last_update_ms: u64,
    last_media: f64,
    incident: Option<Incident>,
}

impl StreamState {
    /// A stream with no history, for `policy`.
    pub fn new(stream_id: impl Into<String>, policy: &Policy) -> StreamState {
        StreamState {
            stream_id: stream_id.into(),
            rules: vec![RuleState::default(); policy.config.rules.len()],
            tier: None,
            last_change_ms: 0,
            last_update_ms: 0,
            last_media: 0.0,
            incident: None,
        }
    }

    /// The current tier (`none` below the lowest).
    pub fn tier(&self, policy: &Policy) -> String {
        policy.tier_name(self.tier)
    }

    /// No tier, no incident and no active rule: [`StreamState::tick`] and a stall
    /// change nothing (a replay skips them).
    pub fn is_idle(&self) -> bool {
        self.tier.is_none() && self.incident.is_none() && self.rules.iter().all(|r| !r.active)
    }

    /// Switches to a new policy (thresholds changed at run time) without dropping the
    /// stream: rule state is kept for rules whose name survives; the tier and the open
    /// incident carry over and are re-evaluated at the next input.
    pub fn adopt(&mut self, old: &Policy, new: &Policy) {
        let mut rules = vec![RuleState::default(); new.config.rules.len()];
        for (i, r) in new.config.rules.iter().enumerate() {
            if let Some(j) = old.config.rules.iter().position(|o| o.name == r.name) {
                rules[i] = self.rules[j].clone();
            }
        }
        self.rules = rules;
        // A tier that no longer exists maps to the same position, clamped to the new list.
        self.tier = self.tier.map(|t| {
            new.config
                .tier_index(&old.config.tiers[t])
                .unwrap_or(t.min(new.config.tiers.len() - 1))
        });
    }

    /// Feeds one sampled frame.
    pub fn on_frame(&mut self, policy: &Policy, frame: &FrameSignals) -> Vec<Decision> {
        self.last_media = frame.media_time;
        for (i, rule) in policy.config.rules.iter().enumerate() {
            let state = &mut self.rules[i];
            let in_banks =
                |bank: &str| rule.banks.is_empty() || rule.banks.iter().any(|b| b == bank);
            let (value, items): (f64, Vec<Evidence>) = match rule.kind {
                RuleKind::HashMatch => {
                    let items: Vec<Evidence> = frame
                        .hash_matches
                        .iter()
                        .filter(|m| {
                            in_banks(&m.bank)
                                && m.distance <= rule.max_distance
                                && m.quality >= rule.min_quality
                        })
                        .map(|m| Evidence::HashMatch {
                            rule: rule.name.clone(),
                            media_time: frame.media_time,
                            matched: m.clone(),
                        })
                        .collect();
                    (if items.is_empty() { 0.0 } else { 1.0 }, items)
                }
                RuleKind::VideoMatch => {
                    let best = frame
                        .video_matches
                        .iter()
                        .filter(|m| in_banks(&m.bank))
                        .max_by(|a, b| a.percent.total_cmp(&b.percent));
                    match best {
                        Some(m) => (
                            (m.percent / 100.0).clamp(0.0, 1.0),
                            vec![Evidence::VideoMatch {
                                rule: rule.name.clone(),
                                media_time: frame.media_time,
                                matched: m.clone(),
                            }],
                        ),
                        None => (0.0, Vec::new()),
                    }
                }
                RuleKind::Classifier => {
                    let category = rule.category.as_deref().unwrap_or_default();
                    let best = frame
                        .scores
                        .iter()
                        .filter(|s| s.category == category && s.score.is_finite())
                        .max_by(|a, b| a.score.total_cmp(&b.score));
                    match best {
                        Some(s) => (
                            s.score.clamp(0.0, 1.0),
                            vec![Evidence::Classifier {
                                rule: rule.name.clone(),
                                media_time: frame.media_time,
                                smoothed: 0.0,
                                score: s.clone(),
                            }],
                        ),
                        None => (0.0, Vec::new()),
                    }
                }
            };
            let smoothed = match state.smoothed {
                Some(prev) => rule.smoothing * value + (1.0 - rule.smoothing) * prev,
                None => value,
            };
            state.smoothed = Some(smoothed);
            let counts = smoothed >= rule.enter;
            state.recent.push_back((frame.media_time, counts));
            while state.recent.len() > rule.n
                || state
                    .recent
                    .front()
                    .is_some_and(|(t, _)| *t < frame.media_time - rule.within_secs)
            {
                state.recent.pop_front();
            }
            if !state.active && state.recent.iter().filter(|(_, c)| *c).count() >= rule.k {
                state.active = true;
                state.last_ok_ms = frame.wall_ms;
            }
            if state.active && smoothed >= rule.exit {
                state.last_ok_ms = frame.wall_ms;
            }
            if smoothed >= rule.exit {
                for mut item in items {
                    if let Evidence::Classifier { smoothed: s, .. } = &mut item {
                        *s = smoothed;
                    }
                    state.evidence.push_back(item);
                    if state.evidence.len() > EVIDENCE_PER_RULE {
                        state.evidence.pop_front();
                    }
                }
            }
        }
        self.evaluate(policy, frame.wall_ms)
    }

    /// Re-evaluates at wall time `now_ms` without a frame: holds expire and pending
    /// de-escalations take effect (a stalled stream still cools down).
    pub fn tick(&mut self, policy: &Policy, now_ms: u64) -> Vec<Decision> {
        self.evaluate(policy, now_ms)
    }

    /// Handles a lifecycle event at wall time `now_ms`.
    pub fn on_event(&mut self, policy: &Policy, event: StreamEvent, now_ms: u64) -> Vec<Decision> {
        match event {
            StreamEvent::Started => {
                self.rules = vec![RuleState::default(); policy.config.rules.len()];
                Vec::new()
            }
            StreamEvent::Stalled => self.evaluate(policy, now_ms),
            StreamEvent::Ended => {
                let mut out = Vec::new();
                if self.incident.is_some() {
                    let previous = self.tier;
                    self.tier = None;
                    out.push(self.decide(
                        policy,
                        DecisionKind::Ended,
                        previous,
                        now_ms,
                        Vec::new(),
                    ));
                    self.incident = None;
                }
                self.rules = vec![RuleState::default(); policy.config.rules.len()];
                self.tier = None;
                out
            }
        }
    }

    fn evaluate(&mut self, policy: &Policy, now_ms: u64) -> Vec<Decision> {
        for (i, rule) in policy.config.rules.iter().enumerate() {
            let state = &mut self.rules[i];
            let held_ms = (rule.hold_secs * 1000.0) as u64;
            if state.active && now_ms.saturating_sub(state.last_ok_ms) > held_ms {
                state.active = false;
                state.recent.clear();
                state.evidence.clear();
            }
        }
        let target = self
            .rules
            .iter()
            .zip(&policy.rule_tiers)
            .filter(|(s, _)| s.active)
            .map(|(_, &t)| t)
            .max();
        let cooldown_ms = (policy.config.cooldown_secs * 1000.0) as u64;
        let update_ms = (policy.config.update_interval_secs * 1000.0) as u64;
        let evidence = self.active_evidence();
        let mut out = Vec::new();
        if target > self.tier {
            let previous = self.tier;
            if self.incident.is_none() {
                let started_ms = now_ms;
                let media_start = evidence
                    .iter()
                    .map(media_time)
                    .fold(self.last_media, f64::min);
                self.incident = Some(Incident {
                    id: hex(&Sha256::digest(
                        format!("{}\0{started_ms}", self.stream_id).as_bytes(),
                    )[..12]),
                    started_ms,
                    media_start,
                    next_sequence: 0,
                    reported: BTreeSet::new(),
                });
            }
            self.tier = target;
            self.last_change_ms = now_ms;
            self.last_update_ms = now_ms;
            out.push(self.decide(policy, DecisionKind::Escalated, previous, now_ms, evidence));
        } else if target < self.tier {
            if now_ms.saturating_sub(self.last_change_ms) >= cooldown_ms {
                let previous = self.tier;
                self.tier = target;
                self.last_change_ms = now_ms;
                self.last_update_ms = now_ms;
                out.push(self.decide(
                    policy,
                    DecisionKind::Deescalated,
                    previous,
                    now_ms,
                    evidence,
                ));
                if target.is_none() {
                    self.incident = None;
                }
            }
        } else if let Some(incident) = &self.incident {
            let fresh = evidence
                .iter()
                .any(|e| !incident.reported.contains(&e.key()));
            if fresh && now_ms.saturating_sub(self.last_update_ms) >= update_ms {
                self.last_update_ms = now_ms;
                out.push(self.decide(policy, DecisionKind::Updated, self.tier, now_ms, evidence));
            }
        }
        out
    }

    fn active_evidence(&self) -> Vec<Evidence> {
        self.rules
            .iter()
            .filter(|s| s.active)
            .flat_map(|s| s.evidence.iter().cloned())
            .collect()
    }

    fn decide(
        &mut self,
        policy: &Policy,
        kind: DecisionKind,
        previous: Option<usize>,
        now_ms: u64,
        evidence: Vec<Evidence>,
    ) -> Decision {
        let incident = self
            .incident
            .as_mut()
            .expect("decisions belong to an incident");
        let sequence = incident.next_sequence;
        incident.next_sequence += 1;
        incident.reported.extend(evidence.iter().map(Evidence::key));
        let id = hex(&Sha256::digest(
            format!("{}\0{}\0{}", self.stream_id, incident.started_ms, sequence).as_bytes(),
        )[..16]);
        let rules = policy
            .config
            .rules
            .iter()
            .zip(&self.rules)
            .filter(|(_, s)| s.active)
            .map(|(r, _)| r.name.clone())
            .collect();
        Decision {
            id,
            stream_id: self.stream_id.clone(),
            incident_id: incident.id.clone(),
            sequence,
            kind,
            tier: policy.tier_name(self.tier),
            previous_tier: policy.tier_name(previous),
            activation: policy.activation(self.tier),
            media_start: incident.media_start,
            media_end: self.last_media,
            wall_ms: now_ms,
            rules,
            evidence,
            policy_version: policy.version.clone(),
        }
    }
}

fn media_time(e: &Evidence) -> f64 {
    match e {
        Evidence::HashMatch { media_time, .. }
        | Evidence::VideoMatch { media_time, .. }
        | Evidence::Classifier { media_time, .. } => *media_time,
    }
}

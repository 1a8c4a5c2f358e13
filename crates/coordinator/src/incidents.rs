//! Incidents across streams and workers.
//!
//! A worker's policy opens a per-stream incident; the coordinator groups them. An
//! escalation joins a live incident when its stream is already in it, when it matched a
//! bank entry the incident already holds, or when its stream is content-linked
//! ([`crate::links`]) to a stream in it; otherwise it opens one. A content link also
//! pulls a stream that never escalated into the incident of the stream it is linked to,
//! and a group of at least `spread_min_streams` linked streams, none of them escalated,
//! opens a *spread* incident: the same unknown content live on many streams is itself a
//! signal.
//!
//! Ids are deterministic (from the first escalation's id, or the spread group's first
//! link), so a standby coordinator replaying the same topics names incidents the same.

use std::collections::{BTreeMap, BTreeSet, VecDeque};

use serde::Serialize;

use crate::StreamKey;
use crate::links::{ContentLinks, Link};

/// A bank entry an escalation matched.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize)]
pub struct BankEntry {
    /// Bank name.
    pub bank: String,
    /// Entry id.
    pub entry: String,
}

/// What a worker's decision did to its stream's incident (the policy's own kinds).
pub use firebreak_policy::DecisionKind;

/// One escalation event from a worker (the coordinator's view of its CloudEvent).
#[derive(Debug, Clone, PartialEq)]
pub struct Escalation {
    /// The decision's id.
    pub id: String,
    /// The stream.
    pub stream: StreamKey,
    /// The worker that decided.
    pub worker: String,
    /// The worker's per-stream incident id.
    pub stream_incident: String,
    /// What happened.
    pub kind: DecisionKind,
    /// The stream's tier now (`none` once it fell back).
    pub tier: String,
    /// The activation type the tier reaches, if any.
    pub activation: Option<String>,
    /// Wall time of the decision, ms since the Unix epoch.
    pub wall_ms: u64,
    /// Bank entries in its evidence.
    pub entries: Vec<BankEntry>,
    /// The rules behind it.
    pub rules: Vec<String>,
}

/// How the coordinator groups.
#[derive(Debug, Clone, PartialEq)]
pub struct IncidentConfig {
    /// The policy's tiers, lowest first (ranks compare tiers; `none` is below all).
    pub tiers: Vec<String>,
    /// Linked streams, none escalated, that open a spread incident (0 = never).
    pub spread_min_streams: usize,
    /// Resolved incidents kept (the oldest go first).
    pub max_resolved: usize,
    /// Escalation ids kept per stream of an incident (the latest).
    pub max_escalations_per_stream: usize,
}

impl Default for IncidentConfig {
    fn default() -> Self {
        IncidentConfig {
            tiers: ["watch", "review", "escalate", "crisis"]
                .map(String::from)
                .to_vec(),
            spread_min_streams: 5,
            max_resolved: 10_000,
            max_escalations_per_stream: 32,
        }
    }
}

/// Where an incident is in the responder workflow.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum State {
    /// Nobody has looked at it.
    Open,
    /// A responder is on it.
    Acknowledged,
    /// Confirmed as a crisis: its hashes are published to every worker.
    Confirmed,
    /// Rejected as a false positive: its hashes suppress the collision.
    Rejected,
    /// Closed.
    Resolved,
}

/// A responder's action.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Action {
    /// Open -> acknowledged.
    Acknowledge,
    /// Open or acknowledged -> confirmed.
    Confirm,
    /// Open or acknowledged -> rejected.
    Reject,
    /// Confirmed -> acknowledged (the published entries are withdrawn).
    Retract,
    /// Anything but resolved -> resolved.
    Resolve,
    /// Confirmed -> confirmed, its entries made fleet-wide instead of the confirming
    /// tenant's (a platform admin; once per confirmation).
    Promote,
}

impl Action {
    /// The state this action leads to from `state`, if it is allowed there.
    pub fn from(self, state: State) -> Option<State> {
        Some(match (self, state) {
            (Action::Acknowledge, State::Open) => State::Acknowledged,
            (Action::Confirm, State::Open | State::Acknowledged) => State::Confirmed,
            (Action::Reject, State::Open | State::Acknowledged) => State::Rejected,
            (Action::Retract, State::Confirmed) => State::Acknowledged,
            (Action::Resolve, s) if s != State::Resolved => State::Resolved,
            (Action::Promote, State::Confirmed) => State::Confirmed,
            _ => return None,
        })
    }
}

/// Why a stream is in an incident.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(tag = "kind", rename_all = "snake_case")]
pub enum Via {
    /// It escalated.
    Escalation,
    /// It matched a bank entry the incident holds.
    SharedEntry {
        /// The entry.
        entry: BankEntry,
    },
    /// Its recent frames match another member's.
    Content {
        /// The member it is linked to.
        with: StreamKey,
        /// Matching frames within the window.
        frames: usize,
        /// The closest pair of frames.
        best_distance: u32,
    },
}

/// A stream in an incident.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Member {
    /// How it joined.
    pub via: Via,
    /// Wall time it joined.
    pub first_seen_ms: u64,
    /// Its tier now (`none` when it never escalated or fell back).
    pub tier: String,
    /// The highest tier it reached.
    pub max_tier: String,
    /// The worker that last reported it.
    pub worker: Option<String>,
    /// Its latest escalation ids.
    pub escalations: VecDeque<String>,
    /// Whether it ended.
    pub ended: bool,
}

/// An incident.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Incident {
    /// Deterministic id.
    pub id: String,
    /// Whether a content group, not an escalation, opened it.
    pub spread: bool,
    /// Workflow state.
    pub state: State,
    /// Wall time it opened.
    pub opened_ms: u64,
    /// Wall time of its latest change.
    pub updated_ms: u64,
    /// The highest tier any member reached.
    pub max_tier: String,
    /// The activation type of the highest escalation, if any.
    pub activation: Option<String>,
    /// Its streams.
    pub streams: BTreeMap<StreamKey, Member>,
    /// The bank entries matched by its members.
    pub entries: BTreeSet<BankEntry>,
    /// The rules that fired.
    pub rules: BTreeSet<String>,
    /// Responder actions and reopenings, in order: (wall ms, who, what).
    pub history: Vec<(u64, String, String)>,
    /// Whether its confirmation's entries were promoted fleet-wide.
    pub promoted: bool,
}

impl Incident {
    /// The incident as `tenant` may see it: only its own streams, or `None` when none of
    /// its streams is the tenant's.
    pub fn visible_to(&self, tenant: &str) -> Option<Incident> {
        if !self.streams.keys().any(|s| s.tenant == tenant) {
            return None;
        }
        let mut copy = self.clone();
        copy.streams.retain(|s, _| s.tenant == tenant);
        Some(copy)
    }
}

/// What an input changed.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Change {
    /// A new incident.
    Opened(String),
    /// A stream joined an incident.
    Joined {
        /// The incident.
        incident: String,
        /// The stream.
        stream: StreamKey,
    },
    /// New evidence on an incident.
    Updated(String),
    /// New evidence reopened a resolved incident.
    Reopened(String),
    /// Content linked two live incidents: `from` was folded into `into` (the older).
    Merged {
        /// The incident kept.
        into: String,
        /// The incident folded in (gone).
        from: String,
    },
    /// A responder's action.
    Acted {
        /// The incident.
        incident: String,
        /// Its state before.
        from: State,
        /// Its state now.
        to: State,
    },
}

/// Why an action was refused.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ActionError {
    /// No such incident.
    NotFound,
    /// Not allowed in this state.
    Conflict(State),
}

/// Every incident.
#[derive(Debug, Default)]
pub struct Incidents {
    config: IncidentConfig,
    all: BTreeMap<String, Incident>,
    /// Live (not resolved) incident of each stream.
    by_stream: BTreeMap<StreamKey, String>,
    /// Live incident holding each bank entry.
    by_entry: BTreeMap<BankEntry, String>,
    /// The worker's per-stream incident id -> ours (reopening resolved ones).
    by_stream_incident: BTreeMap<String, String>,
    resolved: VecDeque<String>,
}

impl Incidents {
    /// No incidents.
    pub fn new(config: IncidentConfig) -> Incidents {
        Incidents {
            config,
            ..Incidents::default()
        }
    }

    fn rank(&self, tier: &str) -> usize {
        self.config
            .tiers
            .iter()
            .position(|t| t == tier)
            .map_or(0, |i| i + 1)
    }

    /// An incident.
    pub fn get(&self, id: &str) -> Option<&Incident> {
        self.all.get(id)
    }

    /// The live incident a stream is in.
    pub fn of_stream(&self, stream: &StreamKey) -> Option<&Incident> {
        self.by_stream.get(stream).and_then(|id| self.all.get(id))
    }

    /// Incidents, newest first.
    pub fn list(&self) -> Vec<&Incident> {
        let mut v: Vec<&Incident> = self.all.values().collect();
        v.sort_by(|a, b| b.opened_ms.cmp(&a.opened_ms).then(a.id.cmp(&b.id)));
        v
    }

    /// Takes an escalation; `links` tells which streams share content.
    pub fn on_escalation(&mut self, e: &Escalation, links: &ContentLinks) -> Vec<Change> {
        let mut changes = Vec::new();
        let found = self
            .by_stream
            .get(&e.stream)
            .cloned()
            .map(|id| (id, Via::Escalation))
            .or_else(|| {
                e.entries.iter().find_map(|en| {
                    self.by_entry
                        .get(en)
                        .map(|id| (id.clone(), Via::SharedEntry { entry: en.clone() }))
                })
            })
            .or_else(|| {
                links.links_of(&e.stream).into_iter().find_map(|l| {
                    let other = l.other(&e.stream);
                    self.by_stream.get(other).map(|id| {
                        (
                            id.clone(),
                            Via::Content {
                                with: other.clone(),
                                frames: l.frames,
                                best_distance: l.best_distance,
                            },
                        )
                    })
                })
            });
        let reopen = found.is_none()
            && self
                .by_stream_incident
                .get(&e.stream_incident)
                .and_then(|id| self.all.get(id))
                .is_some_and(|i| i.state == State::Resolved);
        let raises = matches!(e.kind, DecisionKind::Escalated | DecisionKind::Updated);
        let id = match found {
            Some((id, via)) => {
                if !self.all[&id].streams.contains_key(&e.stream) {
                    self.join(&id, &e.stream, via, e.wall_ms);
                    changes.push(Change::Joined {
                        incident: id.clone(),
                        stream: e.stream.clone(),
                    });
                }
                changes.push(Change::Updated(id.clone()));
                id
            }
            None if reopen && raises => {
                let id = self.by_stream_incident[&e.stream_incident].clone();
                self.resolved.retain(|r| r != &id);
                let inc = self.all.get_mut(&id).expect("indexed");
                inc.state = State::Open;
                inc.history.push((
                    e.wall_ms,
                    "coordinator".into(),
                    "reopened: new evidence".into(),
                ));
                let members: Vec<StreamKey> = inc.streams.keys().cloned().collect();
                let entries: Vec<BankEntry> = inc.entries.iter().cloned().collect();
                for s in members {
                    self.by_stream.entry(s).or_insert_with(|| id.clone());
                }
                for en in entries {
                    self.by_entry.entry(en).or_insert_with(|| id.clone());
                }
                if !self.all[&id].streams.contains_key(&e.stream) {
                    self.join(&id, &e.stream, Via::Escalation, e.wall_ms);
                }
                changes.push(Change::Reopened(id.clone()));
                id
            }
            None if raises => {
                let id = format!("inc-{}", e.id);
                self.all.insert(
                    id.clone(),
                    Incident {
                        id: id.clone(),
                        spread: false,
                        state: State::Open,
                        opened_ms: e.wall_ms,
                        updated_ms: e.wall_ms,
                        max_tier: "none".into(),
                        activation: None,
                        streams: BTreeMap::new(),
                        entries: BTreeSet::new(),
                        rules: BTreeSet::new(),
                        history: Vec::new(),
                        promoted: false,
                    },
                );
                self.join(&id, &e.stream, Via::Escalation, e.wall_ms);
                changes.push(Change::Opened(id.clone()));
                id
            }
            // A fall-back or end of a stream the coordinator holds no incident for.
            None => return changes,
        };
        self.by_stream_incident
            .insert(e.stream_incident.clone(), id.clone());
        self.apply(&id, e);
        // Linked streams that are in no incident join this one.
        for l in links.links_of(&e.stream) {
            changes.extend(self.on_link(&l, links, e.wall_ms));
        }
        changes
    }

    fn join(&mut self, id: &str, stream: &StreamKey, via: Via, at_ms: u64) {
        let inc = self.all.get_mut(id).expect("known incident");
        inc.streams.insert(
            stream.clone(),
            Member {
                via,
                first_seen_ms: at_ms,
                tier: "none".into(),
                max_tier: "none".into(),
                worker: None,
                escalations: VecDeque::new(),
                ended: false,
            },
        );
        inc.updated_ms = inc.updated_ms.max(at_ms);
        if inc.state != State::Resolved {
            self.by_stream.insert(stream.clone(), id.to_string());
        }
    }

    fn apply(&mut self, id: &str, e: &Escalation) {
        let rank = self.rank(&e.tier);
        let max_per = self.config.max_escalations_per_stream;
        let (member_max, incident_max) = {
            let inc = &self.all[id];
            (
                self.rank(&inc.streams[&e.stream].max_tier),
                self.rank(&inc.max_tier),
            )
        };
        let inc = self.all.get_mut(id).expect("known incident");
        inc.updated_ms = inc.updated_ms.max(e.wall_ms);
        let m = inc.streams.get_mut(&e.stream).expect("member");
        m.tier = e.tier.clone();
        m.worker = Some(e.worker.clone());
        m.ended |= e.kind == DecisionKind::Ended;
        m.escalations.push_back(e.id.clone());
        while m.escalations.len() > max_per {
            m.escalations.pop_front();
        }
        if rank > member_max {
            m.max_tier = e.tier.clone();
        }
        if rank > incident_max {
            inc.max_tier = e.tier.clone();
            inc.activation = e.activation.clone();
        } else if inc.activation.is_none() {
            inc.activation = e.activation.clone();
        }
        inc.rules.extend(e.rules.iter().cloned());
        let live = inc.state != State::Resolved;
        for en in &e.entries {
            inc.entries.insert(en.clone());
            if live {
                self.by_entry.insert(en.clone(), id.to_string());
            }
        }
    }

    /// Takes a content link: a stream linked to a member of a live incident joins it;
    /// a large enough group of streams in no incident opens a spread incident.
    pub fn on_link(&mut self, l: &Link, links: &ContentLinks, now_ms: u64) -> Vec<Change> {
        let (ia, ib) = (
            self.by_stream.get(&l.a).cloned(),
            self.by_stream.get(&l.b).cloned(),
        );
        match (ia, ib) {
            (Some(id), None) | (None, Some(id)) => {
                let (member, newcomer) = if self.by_stream.contains_key(&l.a) {
                    (&l.a, &l.b)
                } else {
                    (&l.b, &l.a)
                };
                let via = Via::Content {
                    with: member.clone(),
                    frames: l.frames,
                    best_distance: l.best_distance,
                };
                self.join(&id, newcomer, via, now_ms);
                vec![Change::Joined {
                    incident: id,
                    stream: newcomer.clone(),
                }]
            }
            (None, None) if self.config.spread_min_streams > 0 => {
                let group = links.group_of(&l.a);
                if group.len() < self.config.spread_min_streams
                    || group.iter().any(|s| self.by_stream.contains_key(s))
                {
                    return Vec::new();
                }
                let first = group.iter().next().expect("non-empty").clone();
                let id = format!("spread-{}-{}-{}", l.first_ms, first.tenant, first.stream);
                self.all.insert(
                    id.clone(),
                    Incident {
                        id: id.clone(),
                        spread: true,
                        state: State::Open,
                        opened_ms: now_ms,
                        updated_ms: now_ms,
                        max_tier: "none".into(),
                        activation: None,
                        streams: BTreeMap::new(),
                        entries: BTreeSet::new(),
                        rules: BTreeSet::new(),
                        history: Vec::new(),
                        promoted: false,
                    },
                );
                let mut changes = vec![Change::Opened(id.clone())];
                for s in &group {
                    let best = links
                        .links_of(s)
                        .into_iter()
                        .min_by_key(|k| k.best_distance)
                        .expect("in a group, so linked");
                    let via = Via::Content {
                        with: best.other(s).clone(),
                        frames: best.frames,
                        best_distance: best.best_distance,
                    };
                    self.join(&id, s, via, now_ms);
                    changes.push(Change::Joined {
                        incident: id.clone(),
                        stream: s.clone(),
                    });
                }
                changes
            }
            (Some(x), Some(y)) if x != y => self.merge(&x, &y, now_ms),
            _ => Vec::new(),
        }
    }

    /// Folds the younger of two live, undecided (open or acknowledged) incidents into
    /// the older: the same content on two streams that escalated before their frames
    /// were linked is one incident.
    fn merge(&mut self, x: &str, y: &str, now_ms: u64) -> Vec<Change> {
        let undecided = |id: &str| {
            self.all
                .get(id)
                .is_some_and(|i| matches!(i.state, State::Open | State::Acknowledged))
        };
        if !undecided(x) || !undecided(y) {
            return Vec::new();
        }
        let key = |id: &str| (self.all[id].opened_ms, id.to_string());
        let (into, from) = if key(x) <= key(y) { (x, y) } else { (y, x) };
        let (into, from) = (into.to_string(), from.to_string());
        let gone = self.all.remove(&from).expect("live incident");
        let promote = self.rank(&gone.max_tier) > self.rank(&self.all[&into].max_tier);
        let inc = self.all.get_mut(&into).expect("live incident");
        for (s, m) in gone.streams {
            inc.streams.entry(s).or_insert(m);
        }
        inc.entries.extend(gone.entries);
        inc.rules.extend(gone.rules);
        if promote {
            inc.max_tier = gone.max_tier;
            inc.activation = gone.activation;
        }
        inc.history.extend(gone.history);
        inc.history.push((
            now_ms,
            "coordinator".into(),
            format!("merged {from}: same content"),
        ));
        inc.updated_ms = inc.updated_ms.max(now_ms);
        // Every index that named the folded incident names the kept one.
        for v in self
            .by_stream
            .values_mut()
            .chain(self.by_entry.values_mut())
            .chain(self.by_stream_incident.values_mut())
        {
            if *v == from {
                v.clone_from(&into);
            }
        }
        vec![Change::Merged { into, from }]
    }

    /// Bank entries published for incident `id` (its confirmation): a stream that later
    /// matches one of them joins this incident. Ignored for an unknown or resolved one.
    pub fn claim_entries(&mut self, id: &str, entries: impl IntoIterator<Item = BankEntry>) {
        let Some(inc) = self.all.get_mut(id) else {
            return;
        };
        if inc.state == State::Resolved {
            return;
        }
        for e in entries {
            inc.entries.insert(e.clone());
            self.by_entry.insert(e, id.to_string());
        }
    }

    /// The state `action` on incident `id` leads to, if it is allowed now.
    pub fn allowed(&self, id: &str, action: Action) -> Result<State, ActionError> {
        let inc = self.all.get(id).ok_or(ActionError::NotFound)?;
        if action == Action::Promote && inc.promoted {
            return Err(ActionError::Conflict(inc.state));
        }
        action
            .from(inc.state)
            .ok_or(ActionError::Conflict(inc.state))
    }

    /// A responder's action.
    pub fn act(
        &mut self,
        id: &str,
        action: Action,
        who: &str,
        at_ms: u64,
    ) -> Result<Change, ActionError> {
        let to = self.allowed(id, action)?;
        let inc = self.all.get_mut(id).ok_or(ActionError::NotFound)?;
        let from = inc.state;
        inc.promoted = match action {
            Action::Promote => true,
            Action::Retract => false,
            _ => inc.promoted,
        };
        inc.state = to;
        inc.updated_ms = inc.updated_ms.max(at_ms);
        inc.history
            .push((at_ms, who.to_string(), format!("{action:?}").to_lowercase()));
        if to == State::Resolved {
            let id = id.to_string();
            self.by_stream.retain(|_, v| v != &id);
            self.by_entry.retain(|_, v| v != &id);
            self.resolved.push_back(id.clone());
            while self.resolved.len() > self.config.max_resolved {
                if let Some(old) = self.resolved.pop_front() {
                    self.all.remove(&old);
                    self.by_stream_incident.retain(|_, v| v != &old);
                }
            }
        }
        Ok(Change::Acted {
            incident: id.to_string(),
            from,
            to,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The links of these tests: three matching frames, whatever media time they span.
    fn no_span() -> LinkConfig {
        LinkConfig {
            min_span_ms: 0,
            ..LinkConfig::default()
        }
    }
    use crate::FrameSignal;
    use crate::links::LinkConfig;
    use firebreak_hashing::Hash256;

    fn esc(
        id: &str,
        stream: &str,
        tier: &str,
        wall_ms: u64,
        entries: &[(&str, &str)],
    ) -> Escalation {
        Escalation {
            id: id.into(),
            stream: StreamKey::new("t", stream),
            worker: "w1".into(),
            stream_incident: format!("si-{stream}"),
            kind: DecisionKind::Escalated,
            tier: tier.into(),
            activation: (tier == "crisis").then(|| "content_incident".to_string()),
            wall_ms,
            entries: entries
                .iter()
                .map(|(b, e)| BankEntry {
                    bank: b.to_string(),
                    entry: e.to_string(),
                })
                .collect(),
            rules: vec!["r".into()],
        }
    }

    fn content(seed: usize) -> Hash256 {
        let mut h = Hash256::default();
        for k in 0..120 {
            h.set_bit((seed * 37 + k * 2) % 256);
        }
        h
    }

    fn show(
        links: &mut ContentLinks,
        stream: &str,
        from_ms: u64,
        frames: u64,
        h: Hash256,
    ) -> Vec<Link> {
        (0..frames)
            .flat_map(|i| {
                links.observe(&FrameSignal {
                    stream: StreamKey::new("t", stream),
                    wall_ms: from_ms + 500 * i,
                    media_ms: 500 * i,
                    hash: h,
                    quality: 100,
                })
            })
            .collect()
    }

    #[test]
    fn escalations_sharing_a_bank_entry_are_one_incident() {
        let links = ContentLinks::new(no_span());
        let mut inc = Incidents::new(IncidentConfig::default());
        let c1 = inc.on_escalation(&esc("e1", "a", "crisis", 10, &[("crisis", "x1")]), &links);
        assert_eq!(c1, vec![Change::Opened("inc-e1".into())]);
        let c2 = inc.on_escalation(&esc("e2", "b", "escalate", 20, &[("crisis", "x1")]), &links);
        assert_eq!(
            c2,
            vec![
                Change::Joined {
                    incident: "inc-e1".into(),
                    stream: StreamKey::new("t", "b")
                },
                Change::Updated("inc-e1".into())
            ]
        );
        let i = inc.get("inc-e1").unwrap();
        assert_eq!(i.streams.len(), 2);
        assert_eq!(i.max_tier, "crisis");
        assert_eq!(i.activation.as_deref(), Some("content_incident"));
        assert_eq!(
            i.streams[&StreamKey::new("t", "b")].via,
            Via::SharedEntry {
                entry: BankEntry {
                    bank: "crisis".into(),
                    entry: "x1".into()
                }
            }
        );
        // A different entry and no link: a separate incident.
        inc.on_escalation(&esc("e3", "c", "escalate", 30, &[("crisis", "x2")]), &links);
        assert_eq!(inc.list().len(), 2);
    }

    #[test]
    fn an_unknown_clip_on_two_streams_is_one_incident_through_content() {
        let mut links = ContentLinks::new(no_span());
        let mut inc = Incidents::new(IncidentConfig::default());
        let clip = content(1);
        show(&mut links, "a", 0, 4, clip);
        // a escalates on a classifier: no bank entry.
        inc.on_escalation(&esc("e1", "a", "review", 2000, &[]), &links);
        // b starts showing the same clip: the link pulls b into a's incident.
        let formed = show(&mut links, "b", 2500, 4, clip);
        assert_eq!(formed.len(), 1);
        let changes = inc.on_link(&formed[0], &links, 4000);
        assert_eq!(
            changes,
            vec![Change::Joined {
                incident: "inc-e1".into(),
                stream: StreamKey::new("t", "b")
            }]
        );
        let i = inc.get("inc-e1").unwrap();
        let b = &i.streams[&StreamKey::new("t", "b")];
        assert_eq!(b.tier, "none");
        assert!(matches!(
            b.via,
            Via::Content {
                frames: 3,
                best_distance: 0,
                ..
            }
        ));
        // b's own escalation later updates the same incident.
        let c = inc.on_escalation(&esc("e2", "b", "review", 5000, &[]), &links);
        assert_eq!(c, vec![Change::Updated("inc-e1".into())]);
    }

    #[test]
    fn two_streams_that_escalated_before_their_link_are_merged_into_the_older_incident() {
        let mut links = ContentLinks::new(no_span());
        let mut inc = Incidents::new(IncidentConfig::default());
        // Both escalate on a classifier before any of their frames are seen together.
        inc.on_escalation(&esc("e1", "a", "review", 1000, &[]), &links);
        inc.on_escalation(&esc("e2", "b", "escalate", 1200, &[("x", "1")]), &links);
        assert_eq!(inc.list().len(), 2);
        show(&mut links, "a", 1500, 3, content(3));
        let formed = show(&mut links, "b", 1600, 3, content(3));
        assert_eq!(formed.len(), 1);
        let changes = inc.on_link(&formed[0], &links, 3000);
        assert_eq!(
            changes,
            vec![Change::Merged {
                into: "inc-e1".into(),
                from: "inc-e2".into()
            }]
        );
        assert_eq!(inc.list().len(), 1);
        let i = inc.get("inc-e1").unwrap();
        assert_eq!(
            i.streams.keys().cloned().collect::<Vec<_>>(),
            vec![StreamKey::new("t", "a"), StreamKey::new("t", "b")]
        );
        assert_eq!(i.max_tier, "escalate");
        assert_eq!(
            inc.of_stream(&StreamKey::new("t", "b")).unwrap().id,
            "inc-e1"
        );
        // b's next escalation, and its bank entry, land in the merged incident.
        let c = inc.on_escalation(&esc("e3", "c", "review", 4000, &[("x", "1")]), &links);
        assert!(c.contains(&Change::Updated("inc-e1".into())), "{c:?}");
        // A decided incident is not merged.
        inc.act("inc-e1", Action::Confirm, "r", 5000).unwrap();
        inc.on_escalation(&esc("e4", "d", "review", 5100, &[]), &links);
        show(&mut links, "a", 6000, 3, content(4));
        let formed = show(&mut links, "d", 6100, 3, content(4));
        assert_eq!(inc.on_link(&formed[0], &links, 7000), vec![]);
        assert_eq!(inc.list().len(), 2);
    }

    #[test]
    fn a_copy_matching_a_confirmed_incidents_entries_joins_that_incident() {
        let links = ContentLinks::new(no_span());
        let mut inc = Incidents::new(IncidentConfig::default());
        inc.on_escalation(&esc("e1", "a", "review", 1000, &[]), &links);
        inc.act("inc-e1", Action::Confirm, "r", 2000).unwrap();
        inc.claim_entries(
            "inc-e1",
            [BankEntry {
                bank: "crisis".into(),
                entry: "inc-e1:0011223344556677".into(),
            }],
        );
        let c = inc.on_escalation(
            &esc(
                "e2",
                "copy",
                "crisis",
                9000,
                &[("crisis", "inc-e1:0011223344556677")],
            ),
            &links,
        );
        assert!(c.contains(&Change::Updated("inc-e1".into())), "{c:?}");
        assert_eq!(inc.list().len(), 1);
        assert!(matches!(
            inc.get("inc-e1").unwrap().streams[&StreamKey::new("t", "copy")].via,
            Via::SharedEntry { .. }
        ));
    }

    #[test]
    fn a_spread_group_opens_an_incident_once_it_is_large_enough() {
        let mut links = ContentLinks::new(no_span());
        let cfg = IncidentConfig {
            spread_min_streams: 3,
            ..IncidentConfig::default()
        };
        let mut inc = Incidents::new(cfg);
        let clip = content(2);
        let mut opened = Vec::new();
        for (i, s) in ["a", "b", "c"].iter().enumerate() {
            for l in show(&mut links, s, 1000 * i as u64, 3, clip) {
                opened.extend(inc.on_link(&l, &links, 1000 * i as u64 + 1000));
            }
        }
        let ids: Vec<_> = opened
            .iter()
            .filter_map(|c| match c {
                Change::Opened(id) => Some(id.clone()),
                _ => None,
            })
            .collect();
        assert_eq!(ids.len(), 1, "{opened:?}");
        let i = inc.get(&ids[0]).unwrap();
        assert!(i.spread);
        assert_eq!(i.streams.len(), 3);
    }

    #[test]
    fn workflow_and_reopening_on_new_evidence() {
        let links = ContentLinks::new(no_span());
        let mut inc = Incidents::new(IncidentConfig::default());
        inc.on_escalation(&esc("e1", "a", "crisis", 10, &[("crisis", "x")]), &links);
        assert_eq!(
            inc.act("inc-e1", Action::Retract, "r", 11),
            Err(ActionError::Conflict(State::Open))
        );
        assert!(inc.act("inc-e1", Action::Acknowledge, "r", 12).is_ok());
        assert!(inc.act("inc-e1", Action::Confirm, "r", 13).is_ok());
        // A platform admin promotes a confirmation once; a retraction ends it, and a
        // new confirmation may be promoted again.
        assert!(inc.act("inc-e1", Action::Promote, "admin", 14).is_ok());
        assert!(inc.get("inc-e1").unwrap().promoted);
        assert_eq!(
            inc.act("inc-e1", Action::Promote, "admin", 14),
            Err(ActionError::Conflict(State::Confirmed))
        );
        assert!(inc.act("inc-e1", Action::Retract, "r", 14).is_ok());
        assert!(!inc.get("inc-e1").unwrap().promoted);
        assert_eq!(
            inc.act("inc-e1", Action::Promote, "admin", 14),
            Err(ActionError::Conflict(State::Acknowledged))
        );
        assert_eq!(inc.get("inc-e1").unwrap().state, State::Acknowledged);
        assert!(inc.act("inc-e1", Action::Resolve, "r", 15).is_ok());
        assert!(inc.of_stream(&StreamKey::new("t", "a")).is_none());
        assert_eq!(
            inc.act("nope", Action::Resolve, "r", 16),
            Err(ActionError::NotFound)
        );
        // The same stream incident escalates again: the resolved incident reopens.
        let c = inc.on_escalation(&esc("e9", "a", "crisis", 20, &[("crisis", "x")]), &links);
        assert_eq!(c, vec![Change::Reopened("inc-e1".into())]);
        let i = inc.get("inc-e1").unwrap();
        assert_eq!(i.state, State::Open);
        // ack, confirm, promote, retract, resolve, reopened.
        assert_eq!(i.history.len(), 6);
        assert_eq!(inc.list().len(), 1);
    }

    #[test]
    fn resolved_incidents_are_bounded() {
        let links = ContentLinks::new(no_span());
        let mut inc = Incidents::new(IncidentConfig {
            max_resolved: 2,
            ..IncidentConfig::default()
        });
        for k in 0..5 {
            let s = format!("s{k}");
            inc.on_escalation(&esc(&format!("e{k}"), &s, "review", k, &[]), &links);
            inc.act(&format!("inc-e{k}"), Action::Resolve, "r", k + 1)
                .unwrap();
        }
        let ids: Vec<_> = inc.list().iter().map(|i| i.id.clone()).collect();
        assert_eq!(ids, vec!["inc-e4", "inc-e3"]);
    }

    #[test]
    fn a_tenant_sees_only_its_own_streams() {
        let links = ContentLinks::new(no_span());
        let mut inc = Incidents::new(IncidentConfig::default());
        let mut e = esc("e1", "a", "crisis", 10, &[("crisis", "x")]);
        inc.on_escalation(&e, &links);
        e.id = "e2".into();
        e.stream = StreamKey::new("other", "b");
        e.stream_incident = "si-ob".into();
        inc.on_escalation(&e, &links);
        let i = inc.get("inc-e1").unwrap();
        assert_eq!(i.streams.len(), 2);
        let mine = i.visible_to("other").unwrap();
        assert_eq!(
            mine.streams.keys().collect::<Vec<_>>(),
            vec![&StreamKey::new("other", "b")]
        );
        assert!(i.visible_to("nobody").is_none());
    }
}

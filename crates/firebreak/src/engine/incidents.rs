//! Incidents as responders see them: opened by the policy's decisions, acknowledged and
//! resolved by people. Pure state, indexed by incident id; time is passed in.
//!
//! A resolved incident that receives new evidence (the policy escalates or updates it:
//! the crisis goes on) is **reopened**: open again, unacknowledged, with the
//! resolution it overrode kept in `reopened`. The store is bounded (`max_kept`, default
//! [`KEPT`]): beyond it the oldest resolved incident is dropped first. Lists are read a
//! page at a time ([`IncidentStore::page`]).

use std::collections::{HashMap, VecDeque};

use firebreak_policy::policy::{Decision, DecisionKind, Evidence};
use serde::{Deserialize, Serialize};

use super::ActionError;

/// How many incidents are kept by default before the oldest resolved ones are dropped.
pub const KEPT: usize = 5000;

/// A reopening: new evidence after a resolution.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
pub struct Reopened {
    /// When the new evidence arrived, Unix milliseconds.
    pub at_ms: u64,
    /// The resolution it overrode.
    pub resolved: Mark,
}

/// How long a resolved incident stays in the list.
const RESOLVED_SHOWN_MS: u64 = 3_600_000;

/// Someone's acknowledgement or resolution.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
pub struct Mark {
    /// The tenant of the credential that did it.
    pub by: String,
    /// When, Unix milliseconds.
    pub at_ms: u64,
    /// Free text (empty when none was given).
    pub note: String,
}

/// Where an incident is in its responders' workflow.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "state", rename_all = "snake_case")]
pub enum IncidentState {
    /// Nobody has looked at it yet.
    Open,
    /// A responder has it.
    Acknowledged {
        /// Who and when.
        ack: Mark,
    },
    /// Done (final).
    Resolved {
        /// The acknowledgement, if there was one before the resolution.
        ack: Option<Mark>,
        /// Who resolved it and when.
        resolved: Mark,
    },
}

impl IncidentState {
    /// `open`, `acknowledged` or `resolved` (the API's names).
    pub fn name(&self) -> &'static str {
        match self {
            IncidentState::Open => "open",
            IncidentState::Acknowledged { .. } => "acknowledged",
            IncidentState::Resolved { .. } => "resolved",
        }
    }

    fn ack(&self) -> Option<&Mark> {
        match self {
            IncidentState::Open => None,
            IncidentState::Acknowledged { ack } => Some(ack),
            IncidentState::Resolved { ack, .. } => ack.as_ref(),
        }
    }

    fn resolved(&self) -> Option<&Mark> {
        match self {
            IncidentState::Resolved { resolved, .. } => Some(resolved),
            _ => None,
        }
    }
}

/// What a responder does to an incident.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Action {
    /// Takes it (idempotent: a second acknowledgement keeps the first).
    Acknowledge,
    /// Closes it for good.
    Resolve,
}

impl Action {
    /// The audit log's name for it.
    pub fn audit_name(self) -> &'static str {
        match self {
            Action::Acknowledge => "escalation.ack",
            Action::Resolve => "escalation.resolve",
        }
    }
}

/// An incident as the API and the dashboard show it.
#[derive(Debug, Clone, Serialize, utoipa::ToSchema)]
pub struct Escalation {
    /// The incident id.
    pub id: String,
    /// The stream it is about.
    pub stream_id: String,
    /// The tenant the stream belongs to: only it (and admins) see the incident.
    pub tenant: String,
    /// Current tier (a name from the policy's `tiers`).
    pub tier: String,
    /// Its index (1 = lowest tier).
    pub tier_index: usize,
    /// `open`, `acknowledged` or `resolved`.
    #[schema(value_type = String, example = "open")]
    pub state: &'static str,
    /// First decision, Unix milliseconds.
    pub opened_ms: u64,
    /// Last decision, Unix milliseconds.
    pub updated_ms: u64,
    /// When the policy closed it (cooled down, or the stream ended), Unix
    /// milliseconds; `null` while it is open.
    #[schema(required = true)]
    pub closed_ms: Option<u64>,
    /// Policy version of the last decision.
    pub policy_version: String,
    /// The rules active at the last decision.
    pub rules: Vec<String>,
    /// Stream media time of the first decision, seconds.
    pub media_start: f64,
    /// Stream media time of the last decision, seconds.
    pub media_end: f64,
    /// Evidence of the last decision.
    pub evidence: Vec<Evidence>,
    /// Acknowledgement (`null` if none).
    #[schema(required = true)]
    pub acknowledged: Option<Mark>,
    /// Resolution (`null` if none).
    #[schema(required = true)]
    pub resolved: Option<Mark>,
    /// The last reopening: new evidence after a resolution (`null` if never).
    #[schema(required = true)]
    pub reopened: Option<Reopened>,
    /// The latest evidence thumbnail (`/v1/thumbnails/<decision id>`; `null` if none).
    #[schema(required = true)]
    pub thumbnail: Option<String>,
}

/// One incident as it is kept (and journaled, `engine::journal`).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub(crate) struct Incident {
    stream_id: String,
    tenant: String,
    tier: String,
    tier_index: usize,
    state: IncidentState,
    opened_ms: u64,
    updated_ms: u64,
    closed_ms: Option<u64>,
    policy_version: String,
    rules: Vec<String>,
    media_start: f64,
    media_end: f64,
    evidence: Vec<Evidence>,
    /// The last reopening (absent in journals written before reopening existed).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    reopened: Option<Reopened>,
    /// The latest evidence thumbnail's reference.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    thumbnail: Option<String>,
}

impl Incident {
    /// Its state's name.
    pub(crate) fn state_name(&self) -> &'static str {
        self.state.name()
    }

    fn view(&self, id: &str) -> Escalation {
        Escalation {
            id: id.to_owned(),
            stream_id: self.stream_id.clone(),
            tenant: self.tenant.clone(),
            tier: self.tier.clone(),
            tier_index: self.tier_index,
            state: self.state.name(),
            opened_ms: self.opened_ms,
            updated_ms: self.updated_ms,
            closed_ms: self.closed_ms,
            policy_version: self.policy_version.clone(),
            rules: self.rules.clone(),
            media_start: self.media_start,
            media_end: self.media_end,
            evidence: self.evidence.clone(),
            acknowledged: self.state.ack().cloned(),
            resolved: self.state.resolved().cloned(),
            reopened: self.reopened.clone(),
            thumbnail: self.thumbnail.clone(),
        }
    }
}

/// One page of [`IncidentStore::page`].
#[derive(Debug, Clone)]
pub struct Page {
    /// The incidents, most recently updated first.
    pub items: Vec<Escalation>,
    /// How many the whole list holds.
    pub total: usize,
    /// The offset of the next page, if there is one.
    pub next_offset: Option<usize>,
}

/// Every incident, by id, bounded at `max_kept` ([`KEPT`] by default).
#[derive(Debug)]
pub struct IncidentStore {
    by_id: HashMap<String, Incident>,
    /// Ids in the order they were opened (for dropping the oldest resolved).
    order: VecDeque<String>,
    max_kept: usize,
}

impl Default for IncidentStore {
    fn default() -> Self {
        IncidentStore::with_limit(KEPT)
    }
}

impl IncidentStore {
    /// An empty store.
    pub fn new() -> IncidentStore {
        IncidentStore::default()
    }

    /// An empty store keeping at most `max_kept` incidents (at least 1) while some are
    /// resolved: beyond it the oldest resolved is dropped.
    pub fn with_limit(max_kept: usize) -> IncidentStore {
        IncidentStore {
            by_id: HashMap::new(),
            order: VecDeque::new(),
            max_kept: max_kept.max(1),
        }
    }

    /// Drops the oldest resolved incidents while more than `max_kept` are kept.
    fn evict(&mut self) {
        while self.by_id.len() > self.max_kept {
            let Some(i) = self.order.iter().position(|id| {
                self.by_id
                    .get(id)
                    .is_some_and(|e| matches!(e.state, IncidentState::Resolved { .. }))
            }) else {
                break;
            };
            if let Some(id) = self.order.remove(i) {
                self.by_id.remove(&id);
            }
        }
    }

    /// How many incidents are kept.
    pub fn len(&self) -> usize {
        self.by_id.len()
    }

    /// Whether there are none.
    pub fn is_empty(&self) -> bool {
        self.by_id.is_empty()
    }

    /// Applies one of the policy's decisions (`tier_index` is its tier's index, 1 =
    /// lowest) on a stream of `tenant`, and returns the incident as it now stands.
    pub fn record(&mut self, d: &Decision, tier_index: usize, tenant: &str) -> Escalation {
        let closing = matches!(d.kind, DecisionKind::Ended) || d.tier == "none";
        if let Some(e) = self.by_id.get_mut(&d.incident_id) {
            if !closing {
                e.tier = d.tier.clone();
                e.tier_index = tier_index;
                e.rules = d.rules.clone();
                e.evidence = d.evidence.clone();
                // New evidence after a resolution: the crisis goes on.
                if let IncidentState::Resolved { resolved, .. } = &e.state {
                    e.reopened = Some(Reopened {
                        at_ms: d.wall_ms,
                        resolved: resolved.clone(),
                    });
                    e.state = IncidentState::Open;
                    e.closed_ms = None;
                }
            }
            e.updated_ms = d.wall_ms;
            e.media_end = d.media_end;
            e.policy_version = d.policy_version.clone();
            if closing {
                e.closed_ms = Some(d.wall_ms);
            }
            return e.view(&d.incident_id);
        }
        let e = Incident {
            stream_id: d.stream_id.clone(),
            tenant: tenant.to_owned(),
            tier: d.tier.clone(),
            tier_index,
            state: IncidentState::Open,
            opened_ms: d.wall_ms,
            updated_ms: d.wall_ms,
            closed_ms: closing.then_some(d.wall_ms),
            policy_version: d.policy_version.clone(),
            rules: d.rules.clone(),
            media_start: d.media_start,
            media_end: d.media_end,
            evidence: d.evidence.clone(),
            reopened: None,
            thumbnail: None,
        };
        let view = e.view(&d.incident_id);
        self.by_id.insert(d.incident_id.clone(), e);
        self.order.push_back(d.incident_id.clone());
        // Keep the store bounded: drop the oldest resolved incident first.
        self.evict();
        view
    }

    /// Names the latest evidence thumbnail of incident `id`.
    pub fn set_thumbnail(&mut self, id: &str, reference: String) {
        if let Some(e) = self.by_id.get_mut(id) {
            e.thumbnail = Some(reference);
        }
    }

    /// A responder's action on an incident `tenant` may see (`None`: any). Returns the
    /// state before it and the incident after it; a resolved incident answers
    /// [`ActionError::Conflict`], another tenant's [`ActionError::NotFound`].
    pub fn act(
        &mut self,
        id: &str,
        action: Action,
        mark: Mark,
        tenant: Option<&str>,
    ) -> Result<(&'static str, Escalation), ActionError> {
        let (old, next) = self.plan(id, action, mark, tenant)?;
        match next {
            Some(next) => Ok((old, self.put(id, next))),
            None => Ok((old, self.get(id).ok_or(ActionError::NotFound)?)),
        }
    }

    /// What [`IncidentStore::act`] would do, without doing it: the state's name before
    /// it and the incident after it (`None`: unchanged, a repeated acknowledgement).
    pub(crate) fn plan(
        &self,
        id: &str,
        action: Action,
        mark: Mark,
        tenant: Option<&str>,
    ) -> Result<(&'static str, Option<Incident>), ActionError> {
        let e = self
            .by_id
            .get(id)
            .filter(|e| tenant.is_none_or(|t| e.tenant == t))
            .ok_or(ActionError::NotFound)?;
        let old = e.state.name();
        let next = match (&e.state, action) {
            (IncidentState::Resolved { .. }, _) => {
                return Err(ActionError::Conflict("already resolved".into()));
            }
            (IncidentState::Open, Action::Acknowledge) => {
                Some(IncidentState::Acknowledged { ack: mark })
            }
            (IncidentState::Acknowledged { .. }, Action::Acknowledge) => None,
            (state, Action::Resolve) => Some(IncidentState::Resolved {
                ack: state.ack().cloned(),
                resolved: mark,
            }),
        };
        Ok((old, next.map(|state| Incident { state, ..e.clone() })))
    }

    /// Replaces (or adds) incident `id` as it stands; returns its view.
    pub(crate) fn put(&mut self, id: &str, incident: Incident) -> Escalation {
        let view = incident.view(id);
        if self.by_id.insert(id.to_owned(), incident).is_none() {
            self.order.push_back(id.to_owned());
            self.evict();
        }
        view
    }

    /// Incident `id` as it is kept (for the journal).
    pub(crate) fn incident(&self, id: &str) -> Option<&Incident> {
        self.by_id.get(id)
    }

    /// Every incident in the order they were opened (for a journal snapshot).
    pub(crate) fn export(&self) -> Vec<(String, Incident)> {
        self.order
            .iter()
            .filter_map(|id| self.by_id.get(id).map(|e| (id.clone(), e.clone())))
            .collect()
    }

    /// A store holding `incidents` (replayed from the journal, in the order they were
    /// opened, the last state of each id), bounded like [`IncidentStore::record`]
    /// bounds it.
    pub(crate) fn restored(incidents: Vec<(String, Incident)>, max_kept: usize) -> IncidentStore {
        let mut store = IncidentStore::with_limit(max_kept);
        for (id, e) in incidents {
            store.put(&id, e);
        }
        store
    }

    /// One incident.
    pub fn get(&self, id: &str) -> Option<Escalation> {
        self.by_id.get(id).map(|e| e.view(id))
    }

    /// Open and acknowledged incidents of `tenant` (`None`: every tenant's), and those
    /// resolved in the hour before `now_ms`; most recently updated first.
    pub fn list(&self, now_ms: u64, tenant: Option<&str>) -> Vec<Escalation> {
        let hour_ago = now_ms.saturating_sub(RESOLVED_SHOWN_MS);
        let mut out: Vec<Escalation> = self
            .by_id
            .iter()
            .filter(|(_, e)| tenant.is_none_or(|t| e.tenant == t))
            .filter(|(_, e)| e.state.resolved().is_none_or(|r| r.at_ms >= hour_ago))
            .map(|(id, e)| e.view(id))
            .collect();
        out.sort_by(|a, b| b.updated_ms.cmp(&a.updated_ms).then(a.id.cmp(&b.id)));
        out
    }

    /// [`IncidentStore::list`], `limit` incidents from `offset`.
    pub fn page(&self, now_ms: u64, tenant: Option<&str>, offset: usize, limit: usize) -> Page {
        let all = self.list(now_ms, tenant);
        let total = all.len();
        let items: Vec<Escalation> = all.into_iter().skip(offset).take(limit).collect();
        let end = offset.saturating_add(items.len());
        Page {
            next_offset: (end < total && !items.is_empty()).then_some(end),
            items,
            total,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn decision(incident: &str, kind: DecisionKind, tier: &str, wall_ms: u64) -> Decision {
        Decision {
            id: format!("{incident}-{wall_ms}"),
            stream_id: "s1".into(),
            incident_id: incident.into(),
            sequence: 0,
            kind,
            tier: tier.into(),
            previous_tier: "none".into(),
            wall_ms,
            media_start: 1.0,
            media_end: 2.0,
            policy_version: "v1".into(),
            rules: vec!["r".into()],
            evidence: Vec::new(),
            activation: None,
        }
    }

    fn mark(by: &str, at_ms: u64) -> Mark {
        Mark {
            by: by.into(),
            at_ms,
            note: String::new(),
        }
    }

    #[test]
    fn open_acknowledge_resolve() {
        let mut s = IncidentStore::new();
        let e = s.record(
            &decision("i1", DecisionKind::Escalated, "crisis", 1000),
            4,
            "t",
        );
        assert_eq!((e.state, e.tier_index, e.opened_ms), ("open", 4, 1000));
        assert!(matches!(
            s.act("nope", Action::Acknowledge, mark("a", 1), None),
            Err(ActionError::NotFound)
        ));
        let (old, e) = s
            .act("i1", Action::Acknowledge, mark("a", 2000), None)
            .unwrap();
        assert_eq!((old, e.state), ("open", "acknowledged"));
        // A second acknowledgement keeps the first.
        let (old, e) = s
            .act("i1", Action::Acknowledge, mark("b", 3000), None)
            .unwrap();
        assert_eq!((old, e.state), ("acknowledged", "acknowledged"));
        assert_eq!(e.acknowledged, Some(mark("a", 2000)));
        let (old, e) = s.act("i1", Action::Resolve, mark("c", 4000), None).unwrap();
        assert_eq!((old, e.state), ("acknowledged", "resolved"));
        assert_eq!(e.acknowledged, Some(mark("a", 2000)));
        assert_eq!(e.resolved, Some(mark("c", 4000)));
        assert!(matches!(
            s.act("i1", Action::Resolve, mark("c", 5000), None),
            Err(ActionError::Conflict(_))
        ));
        // Shown for an hour after the resolution, then not.
        assert_eq!(s.list(4000 + 3_600_000, None).len(), 1);
        assert!(s.list(4001 + 3_600_000, None).is_empty());
        assert_eq!(s.get("i1").unwrap().state, "resolved");
    }

    #[test]
    fn decisions_update_and_close() {
        let mut s = IncidentStore::new();
        s.record(
            &decision("i1", DecisionKind::Escalated, "review", 1000),
            2,
            "t",
        );
        let e = s.record(
            &decision("i1", DecisionKind::Escalated, "crisis", 2000),
            4,
            "t",
        );
        assert_eq!(
            (e.tier.as_str(), e.tier_index, e.updated_ms),
            ("crisis", 4, 2000)
        );
        assert_eq!(e.closed_ms, None);
        // Cooling down to none closes it but keeps the highest tier shown.
        let e = s.record(
            &decision("i1", DecisionKind::Deescalated, "none", 9000),
            0,
            "t",
        );
        assert_eq!((e.tier.as_str(), e.closed_ms), ("crisis", Some(9000)));
        assert_eq!(e.opened_ms, 1000);
        s.record(
            &decision("i2", DecisionKind::Escalated, "watch", 5000),
            1,
            "t",
        );
        let ids: Vec<String> = s.list(10_000, None).into_iter().map(|e| e.id).collect();
        assert_eq!(ids, ["i1", "i2"]);
    }

    #[test]
    fn tenants_see_and_act_on_their_own_incidents_only() {
        let mut s = IncidentStore::new();
        s.record(
            &decision("a1", DecisionKind::Escalated, "crisis", 1000),
            4,
            "a",
        );
        s.record(
            &decision("b1", DecisionKind::Escalated, "crisis", 2000),
            4,
            "b",
        );
        let ids = |t: Option<&str>| -> Vec<String> {
            s.list(3000, t).into_iter().map(|e| e.id).collect()
        };
        assert_eq!(ids(Some("a")), ["a1"]);
        assert_eq!(ids(Some("b")), ["b1"]);
        assert_eq!(ids(None), ["b1", "a1"]);
        assert!(matches!(
            s.act("a1", Action::Resolve, mark("b", 1), Some("b")),
            Err(ActionError::NotFound)
        ));
        assert_eq!(s.get("a1").unwrap().state, "open");
        s.act("a1", Action::Acknowledge, mark("a", 1), Some("a"))
            .unwrap();
        s.act("b1", Action::Resolve, mark("ops", 1), None).unwrap();
        assert_eq!(s.get("a1").unwrap().tenant, "a");
    }

    #[test]
    fn bounded_by_dropping_the_oldest_resolved() {
        let mut s = IncidentStore::new();
        for i in 0..KEPT {
            s.record(
                &decision(&format!("i{i}"), DecisionKind::Escalated, "watch", i as u64),
                1,
                "t",
            );
        }
        s.act("i7", Action::Resolve, mark("a", 1), None).unwrap();
        s.act("i9", Action::Resolve, mark("a", 1), None).unwrap();
        s.record(
            &decision("new", DecisionKind::Escalated, "watch", 1),
            1,
            "t",
        );
        assert_eq!(s.len(), KEPT);
        assert!(s.get("i7").is_none());
        assert!(s.get("i9").is_some() && s.get("new").is_some());
        // With nothing resolved, the store grows past the bound rather than drop an
        // open incident.
        s.record(
            &decision("new2", DecisionKind::Escalated, "watch", 1),
            1,
            "t",
        );
        s.record(
            &decision("new3", DecisionKind::Escalated, "watch", 1),
            1,
            "t",
        );
        assert_eq!(s.len(), KEPT + 1);
        assert!(s.get("i9").is_none());
    }

    /// New evidence after a resolution reopens the incident (unacknowledged, the
    /// resolution kept in `reopened`); a closing decision does not.
    #[test]
    fn new_evidence_reopens_a_resolved_incident() {
        let mut s = IncidentStore::new();
        s.record(
            &decision("i1", DecisionKind::Escalated, "crisis", 1000),
            4,
            "t",
        );
        s.act("i1", Action::Acknowledge, mark("a", 1500), None)
            .unwrap();
        s.act("i1", Action::Resolve, mark("b", 2000), None).unwrap();
        let e = s.record(
            &decision("i1", DecisionKind::Updated, "crisis", 3000),
            4,
            "t",
        );
        assert_eq!(e.state, "open");
        assert_eq!((e.acknowledged, e.resolved), (None, None));
        assert_eq!(
            e.reopened,
            Some(Reopened {
                at_ms: 3000,
                resolved: mark("b", 2000)
            })
        );
        assert_eq!((e.opened_ms, e.updated_ms), (1000, 3000));
        // It can be acknowledged and resolved again.
        s.act("i1", Action::Acknowledge, mark("a", 3500), None)
            .unwrap();
        s.act("i1", Action::Resolve, mark("b", 4000), None).unwrap();
        // The stream ending (no new evidence) leaves it resolved.
        let e = s.record(&decision("i1", DecisionKind::Ended, "crisis", 5000), 4, "t");
        assert_eq!((e.state, e.closed_ms), ("resolved", Some(5000)));
    }

    /// A store bounded at 3 keeps every open incident and drops the oldest resolved.
    #[test]
    fn a_configured_bound() {
        let mut s = IncidentStore::with_limit(3);
        for (i, id) in ["a", "b", "c"].iter().enumerate() {
            s.record(
                &decision(id, DecisionKind::Escalated, "watch", i as u64),
                1,
                "t",
            );
        }
        s.act("b", Action::Resolve, mark("x", 10), None).unwrap();
        s.act("c", Action::Resolve, mark("x", 11), None).unwrap();
        s.record(&decision("d", DecisionKind::Escalated, "watch", 20), 1, "t");
        let mut ids: Vec<String> = s.export().into_iter().map(|(id, _)| id).collect();
        ids.sort();
        assert_eq!(ids, ["a", "c", "d"]);
    }

    /// Pages of 2 over 5 incidents: offsets 0, 2, 4, then none.
    #[test]
    fn pages() {
        let mut s = IncidentStore::new();
        for i in 0..5u64 {
            s.record(
                &decision(&format!("i{i}"), DecisionKind::Escalated, "watch", i),
                1,
                "t",
            );
        }
        let ids = |p: &Page| p.items.iter().map(|e| e.id.clone()).collect::<Vec<_>>();
        let p = s.page(10, None, 0, 2);
        assert_eq!(
            (ids(&p), p.total, p.next_offset),
            (vec!["i4".into(), "i3".into()], 5, Some(2))
        );
        let p = s.page(10, None, 2, 2);
        assert_eq!(
            (ids(&p), p.next_offset),
            (vec!["i2".into(), "i1".into()], Some(4))
        );
        let p = s.page(10, None, 4, 2);
        assert_eq!((ids(&p), p.next_offset), (vec!["i0".to_owned()], None));
        let p = s.page(10, None, 9, 2);
        assert!(p.items.is_empty() && p.next_offset.is_none() && p.total == 5);
    }
}

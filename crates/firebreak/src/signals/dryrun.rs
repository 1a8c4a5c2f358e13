//! Dry-run: a proposed policy (a whole TOML, or a rule patch of the active one)
//! replayed beside the active policy over the last hours of the signal log, and the
//! difference in escalations, per stream. `POST /v1/policy/dry-run` serves it; a
//! `firebreak replay --policy ACTIVE --compare PROPOSED --from FROM_MS` over the same
//! log gives the same counts.

use std::collections::BTreeMap;
use std::path::Path;
use std::sync::Arc;

use firebreak_policy::Issue;
use firebreak_policy::config::PolicyConfig;
use firebreak_policy::policy::{Decision, DecisionKind, Policy};
use serde::{Deserialize, Serialize};
use serde_json::Value;
use utoipa::ToSchema;

use super::replay::{ReplayOptions, replay};

/// The body of `POST /v1/policy/dry-run`: `toml`, or `rule` and `patch`.
#[derive(Debug, Clone, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct DryRunRequest {
    /// A whole proposed policy (TOML).
    #[serde(default)]
    pub toml: Option<String>,
    /// A rule of the active policy to patch.
    #[serde(default)]
    pub rule: Option<String>,
    /// The patch: numbers for enter, exit, smoothing, k, n, within_secs, hold_secs.
    #[serde(default)]
    #[schema(value_type = Option<Object>)]
    pub patch: Option<Value>,
    /// Hours of recorded signals to replay (default 24, at most 168).
    #[serde(default)]
    pub hours: Option<f64>,
}

/// One stream's difference.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, ToSchema)]
pub struct StreamDiff {
    /// The stream.
    pub stream: String,
    /// Its tenant.
    pub tenant: String,
    /// Escalations under the active policy.
    pub active: u64,
    /// Escalations under the proposed policy.
    pub proposed: u64,
    /// Escalations only the proposed policy makes.
    pub added: Vec<Escalation>,
    /// Escalations only the active policy makes.
    pub removed: Vec<Escalation>,
}

/// An escalation of a dry-run.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, ToSchema)]
pub struct Escalation {
    /// The tier it raised the stream to.
    pub tier: String,
    /// When, Unix ms.
    pub wall_ms: u64,
}

/// The answer of a dry-run.
#[derive(Debug, Clone, PartialEq, Serialize, ToSchema)]
pub struct DryRun {
    /// Its id: apply the proposed policy with `?dry_run=ID` (`PUT /v1/policy`, or
    /// `PATCH /v1/policy/rules/{name}` for a rule patch) to record it with the version.
    pub id: String,
    /// The canonical sha256 of the proposed policy.
    pub proposed_sha256: String,
    /// The active policy's version.
    pub active_version: String,
    /// The proposed policy's version (what applying it would make).
    pub proposed_version: String,
    /// The window replayed: from (Unix ms, inclusive)...
    pub from_ms: u64,
    /// ... to (exclusive).
    pub to_ms: u64,
    /// Frames replayed.
    pub frames: u64,
    /// Escalations under the active policy.
    pub active_escalations: u64,
    /// Escalations under the proposed policy.
    pub proposed_escalations: u64,
    /// Streams whose escalations differ, by id.
    pub streams: Vec<StreamDiff>,
    /// Damaged log blocks met (corrupt or truncated; the block being written counts).
    pub log_errors: u64,
}

impl DryRun {
    /// What a policy version applied on this dry-run records of it.
    pub fn record(&self) -> crate::engine::versions::DryRunRecord {
        crate::engine::versions::DryRunRecord {
            id: self.id.clone(),
            proposed_sha256: self.proposed_sha256.clone(),
            active_version: self.active_version.clone(),
            from_ms: self.from_ms,
            to_ms: self.to_ms,
            added: self.streams.iter().map(|s| s.added.len() as u64).sum(),
            removed: self.streams.iter().map(|s| s.removed.len() as u64).sum(),
        }
    }
}

/// The proposed policy of a request, or every problem.
pub fn proposed(active: &PolicyConfig, r: &DryRunRequest) -> Result<PolicyConfig, Vec<Issue>> {
    match (&r.toml, &r.rule, &r.patch) {
        (Some(toml), None, None) => PolicyConfig::from_toml(toml).map_err(|e| match e {
            firebreak_policy::PolicyError::Invalid(issues) => issues,
            other => vec![Issue::new("toml", other.to_string())],
        }),
        // The same patch `PATCH /v1/policy/rules/{name}` applies.
        (None, Some(rule), Some(patch)) => {
            crate::engine::patched(active, rule, patch).map_err(|e| match e {
                crate::engine::ActionError::NotFound => {
                    vec![Issue::new("rule", format!("no rule {rule:?}"))]
                }
                crate::engine::ActionError::Invalid(issues) => issues,
                other => vec![Issue::new("patch", format!("{other:?}"))],
            })
        }
        _ => Err(vec![Issue::new(
            "body",
            "give either toml, or rule and patch",
        )]),
    }
}

fn escalations(ds: &[Decision]) -> BTreeMap<&str, Vec<(String, u64)>> {
    let mut out: BTreeMap<&str, Vec<(String, u64)>> = BTreeMap::new();
    for d in ds.iter().filter(|d| d.kind == DecisionKind::Escalated) {
        out.entry(&d.stream_id)
            .or_default()
            .push((d.tier.clone(), d.wall_ms));
    }
    out
}

/// Multiset difference.
fn minus(a: &[(String, u64)], b: &[(String, u64)]) -> Vec<Escalation> {
    let mut b = b.to_vec();
    let mut out = Vec::new();
    for x in a {
        match b.iter().position(|y| y == x) {
            Some(i) => {
                b.remove(i);
            }
            None => out.push(Escalation {
                tier: x.0.clone(),
                wall_ms: x.1,
            }),
        }
    }
    out
}

/// Replays `active` and `proposed` over the log in `dir` from `from_ms` (blocking).
pub fn dry_run(
    dir: &Path,
    active: Arc<Policy>,
    proposed: Arc<Policy>,
    tenant: Option<&str>,
    from_ms: u64,
    to_ms: u64,
) -> anyhow::Result<DryRun> {
    let r = replay(
        dir,
        &[active.clone(), proposed.clone()],
        &ReplayOptions {
            tenant: tenant.map(str::to_owned),
            from_ms: Some(from_ms),
            to_ms: Some(to_ms),
            ..ReplayOptions::default()
        },
    )?;
    let a = escalations(&r.decisions[0]);
    let p = escalations(&r.decisions[1]);
    let mut streams = Vec::new();
    for (id, info) in &r.streams {
        let (x, y) = (
            a.get(id.as_str()).cloned().unwrap_or_default(),
            p.get(id.as_str()).cloned().unwrap_or_default(),
        );
        if x != y {
            streams.push(StreamDiff {
                stream: id.clone(),
                tenant: info.tenant.clone(),
                active: x.len() as u64,
                proposed: y.len() as u64,
                added: minus(&y, &x),
                removed: minus(&x, &y),
            });
        }
    }
    let proposed_sha256 = crate::engine::versions::policy_sha256(proposed.config());
    let id = {
        use sha2::{Digest, Sha256};
        let digest = Sha256::digest(format!("{proposed_sha256}\0{from_ms}\0{to_ms}\0{tenant:?}"));
        digest[..8]
            .iter()
            .map(|b| format!("{b:02x}"))
            .collect::<String>()
    };
    Ok(DryRun {
        id,
        proposed_sha256,
        active_version: active.version().to_owned(),
        proposed_version: proposed.version().to_owned(),
        from_ms,
        to_ms,
        frames: r.frames,
        active_escalations: a.values().map(|v| v.len() as u64).sum(),
        proposed_escalations: p.values().map(|v| v.len() as u64).sum(),
        streams,
        log_errors: r.stats.errors() + r.bad_records,
    })
}

//! The escalation policy's configuration: tiers, rules and incident activation types,
//! read from TOML and validated as a whole (every problem reported at once, with its
//! path), so an operator's typo never reaches a live stream.

use serde::{Deserialize, Serialize};

/// One configuration problem, with where it is. The one issue type of every Firebreak
/// configuration: policy files here, the daemon's config file (`firebreak::config`)
/// and operator requests that change the policy.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Issue {
    /// Where: a dotted path (`rule[2].enter`, `auth.tokens[1].scopes[0]`, `tiers`...).
    pub path: String,
    /// What is wrong.
    pub message: String,
}

impl Issue {
    /// An issue at `path`.
    pub fn new(path: impl Into<String>, message: impl Into<String>) -> Issue {
        Issue {
            path: path.into(),
            message: message.into(),
        }
    }

    /// The same issue found in a file named at `at` (`policy.file: rule[0].k`).
    pub fn within(self, at: &str) -> Issue {
        Issue {
            path: format!("{at}: {}", self.path),
            message: self.message,
        }
    }
}

impl std::fmt::Display for Issue {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}: {}", self.path, self.message)
    }
}

/// Why a policy could not be loaded.
#[derive(Debug, thiserror::Error)]
pub enum PolicyError {
    /// The text is not valid TOML for a policy (syntax, unknown field, wrong type).
    #[error("policy TOML: {0}")]
    Toml(String),
    /// The policy parsed but is inconsistent.
    #[error("policy has {} problem(s):\n{}", .0.len(), .0.iter().map(|i| format!("  {i}")).collect::<Vec<_>>().join("\n"))]
    Invalid(Vec<Issue>),
}

/// What a rule looks at in each sampled frame.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum RuleKind {
    /// A PDQ match against one of `banks` (any bank when empty) within `max_distance`
    /// and of at least `min_quality`. The frame's value is 1 when matched, else 0.
    HashMatch,
    /// A live vPDQ window match against one of `banks`; the value is percent / 100.
    VideoMatch,
    /// A classifier score for `category`; the value is the score (0..1).
    Classifier,
}

fn default_distance() -> u32 {
    31
}

/// A rule: when its evidence persists, the stream is raised to `tier`.
#[derive(Debug, Clone, PartialEq, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct Rule {
    /// Unique name, quoted in decisions.
    pub name: String,
    /// What the rule looks at.
    pub kind: RuleKind,
    /// Match rules: banks that count (empty: all).
    #[serde(default)]
    pub banks: Vec<String>,
    /// Hash-match rules: distance at or below which a match counts.
    #[serde(default = "default_distance")]
    pub max_distance: u32,
    /// Hash-match rules: matches of lower quality do not count.
    #[serde(default)]
    pub min_quality: u8,
    /// Classifier rules: the policy category (sexual, graphic_violence, weapon,
    /// extremist_symbol, ...).
    #[serde(default)]
    pub category: Option<String>,
    /// The tier the rule raises the stream to.
    pub tier: String,
    /// Level a frame's (smoothed) value must reach to count (0..=1).
    #[serde(default = "one")]
    pub enter: f64,
    /// Once active, the rule stays active while some frame within `hold_secs` has a
    /// (smoothed) value at or above this level (at most `enter`).
    #[serde(default = "half")]
    pub exit: f64,
    /// Exponential smoothing weight of the newest value (1: no smoothing).
    #[serde(default = "one")]
    pub smoothing: f64,
    /// Active when `k` of the last `n` sampled frames within `within_secs` count.
    #[serde(default = "one_usize")]
    pub k: usize,
    /// See `k`.
    #[serde(default = "one_usize")]
    pub n: usize,
    /// See `k` (media seconds).
    #[serde(default = "default_within")]
    pub within_secs: f64,
    /// How long an active rule stays active without a frame at the exit level
    /// (wall seconds).
    #[serde(default = "default_hold")]
    pub hold_secs: f64,
}

fn one() -> f64 {
    1.0
}
fn half() -> f64 {
    0.5
}
fn one_usize() -> usize {
    1
}
fn default_within() -> f64 {
    10.0
}
fn default_hold() -> f64 {
    30.0
}

/// An incident activation type (GIFCT's Content Incident Protocol and its successors):
/// a decision at `min_tier` or above carries the highest such activation.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct Activation {
    /// Name, as the coordinator knows it.
    pub name: String,
    /// The lowest tier that activates it.
    pub min_tier: String,
}

/// A policy as written by operators.
#[derive(Debug, Clone, PartialEq, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct PolicyConfig {
    /// Operator-visible version label; the effective version adds a content digest.
    pub version: String,
    /// Severity tiers, lowest first.
    pub tiers: Vec<String>,
    /// A lowered tier takes effect only this long after the previous tier change (wall
    /// seconds); raising is immediate.
    #[serde(default = "default_cooldown")]
    pub cooldown_secs: f64,
    /// At most one same-tier update (new evidence) per this many wall seconds.
    #[serde(default = "default_update")]
    pub update_interval_secs: f64,
    /// Activation types, in any order.
    #[serde(default, rename = "activation")]
    pub activations: Vec<Activation>,
    /// Rules.
    #[serde(rename = "rule")]
    pub rules: Vec<Rule>,
}

fn default_cooldown() -> f64 {
    60.0
}
fn default_update() -> f64 {
    30.0
}

/// The policy shipped with Firebreak: crisis banks escalate at once; a live video
/// match escalates; classifier evidence needs persistence.
pub const DEFAULT_POLICY: &str = r#"
version = "default-1"
tiers = ["watch", "review", "escalate", "crisis"]
cooldown_secs = 60
update_interval_secs = 30

[[activation]]
name = "content_incident"
min_tier = "crisis"

[[activation]]
name = "incident_response"
min_tier = "escalate"

[[rule]]
name = "crisis-bank-match"
kind = "hash_match"
banks = ["crisis"]
tier = "crisis"

[[rule]]
name = "known-video-live"
kind = "video_match"
enter = 0.5
exit = 0.25
tier = "crisis"

[[rule]]
name = "any-bank-match"
kind = "hash_match"
tier = "escalate"

[[rule]]
name = "graphic-violence-persistent"
kind = "classifier"
category = "graphic_violence"
enter = 0.8
exit = 0.6
smoothing = 0.5
k = 3
n = 5
within_secs = 10
tier = "review"

[[rule]]
name = "weapon-seen"
kind = "classifier"
category = "weapon"
enter = 0.9
exit = 0.7
k = 2
n = 4
tier = "watch"
"#;

impl PolicyConfig {
    /// Parses and validates a policy.
    pub fn from_toml(text: &str) -> Result<PolicyConfig, PolicyError> {
        let config: PolicyConfig =
            toml::from_str(text).map_err(|e| PolicyError::Toml(e.to_string()))?;
        let issues = config.validate();
        if issues.is_empty() {
            Ok(config)
        } else {
            Err(PolicyError::Invalid(issues))
        }
    }

    /// The built-in policy.
    pub fn builtin() -> PolicyConfig {
        Self::from_toml(DEFAULT_POLICY).expect("the built-in policy is valid")
    }

    /// Index of a tier name (0 = lowest).
    pub fn tier_index(&self, name: &str) -> Option<usize> {
        self.tiers.iter().position(|t| t == name)
    }

    /// Every consistency problem.
    pub fn validate(&self) -> Vec<Issue> {
        let mut issues = Vec::new();
        let mut issue = |path: String, message: String| issues.push(Issue { path, message });
        if self.version.trim().is_empty() {
            issue("version".into(), "must not be empty".into());
        }
        if self.tiers.is_empty() {
            issue("tiers".into(), "at least one tier is needed".into());
        }
        for (i, t) in self.tiers.iter().enumerate() {
            if t.is_empty() || t == "none" {
                issue(format!("tiers[{i}]"), format!("{t:?} is reserved or empty"));
            }
            if self.tiers[..i].contains(t) {
                issue(format!("tiers[{i}]"), format!("duplicate tier {t:?}"));
            }
        }
        for (name, v) in [
            ("cooldown_secs", self.cooldown_secs),
            ("update_interval_secs", self.update_interval_secs),
        ] {
            if !(v.is_finite() && v >= 0.0) {
                issue(
                    name.into(),
                    format!("must be a non-negative number, got {v}"),
                );
            }
        }
        for (i, a) in self.activations.iter().enumerate() {
            if self.tier_index(&a.min_tier).is_none() {
                issue(
                    format!("activation[{i}].min_tier"),
                    format!("unknown tier {:?}", a.min_tier),
                );
            }
        }
        if self.rules.is_empty() {
            issue("rule".into(), "at least one rule is needed".into());
        }
        for (i, r) in self.rules.iter().enumerate() {
            let p = |f: &str| format!("rule[{i}].{f}");
            if self.rules[..i].iter().any(|o| o.name == r.name) {
                issue(p("name"), format!("duplicate rule name {:?}", r.name));
            }
            if self.tier_index(&r.tier).is_none() {
                issue(
                    p("tier"),
                    format!(
                        "unknown tier {:?} (tiers: {})",
                        r.tier,
                        self.tiers.join(", ")
                    ),
                );
            }
            for (f, v) in [("enter", r.enter), ("exit", r.exit)] {
                if !(0.0..=1.0).contains(&v) {
                    issue(p(f), format!("must be within 0..=1, got {v}"));
                }
            }
            if r.exit > r.enter {
                issue(
                    p("exit"),
                    format!("exit level {} is above the enter level {}", r.exit, r.enter),
                );
            }
            if !(r.smoothing > 0.0 && r.smoothing <= 1.0) {
                issue(
                    p("smoothing"),
                    format!("must be within (0, 1], got {}", r.smoothing),
                );
            }
            if r.k == 0 || r.k > r.n {
                issue(
                    p("k"),
                    format!("need 1 <= k <= n, got k = {} and n = {}", r.k, r.n),
                );
            }
            if r.n > 1000 {
                issue(p("n"), format!("at most 1000 frames, got {}", r.n));
            }
            for (f, v) in [("within_secs", r.within_secs), ("hold_secs", r.hold_secs)] {
                if !(v.is_finite() && v > 0.0) {
                    issue(p(f), format!("must be a positive number, got {v}"));
                }
            }
            match (r.kind, &r.category) {
                (RuleKind::Classifier, None) => {
                    issue(p("category"), "a classifier rule needs a category".into())
                }
                (RuleKind::Classifier, Some(c)) if c.is_empty() => {
                    issue(p("category"), "must not be empty".into())
                }
                (RuleKind::Classifier, Some(_)) if !r.banks.is_empty() => {
                    issue(p("banks"), "only match rules take banks".into())
                }
                (RuleKind::HashMatch | RuleKind::VideoMatch, Some(_)) => issue(
                    p("category"),
                    "only classifier rules take a category".into(),
                ),
                _ => {}
            }
        }
        issues
    }
}

#[cfg(test)]
mod roundtrip {
    use super::*;

    #[test]
    fn a_policy_round_trips_through_toml() {
        let p = PolicyConfig::builtin();
        let text = toml::to_string(&p).unwrap();
        assert_eq!(PolicyConfig::from_toml(&text).unwrap(), p);
    }
}

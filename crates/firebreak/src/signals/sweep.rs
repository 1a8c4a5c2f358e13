//! Sweeps: one or two policy parameters varied over a grid
//! (`RULE.FIELD=START:END:STEP`, or `FIELD=...` for the policy's own `cooldown_secs`
//! and `update_interval_secs`), every setting replayed in the same pass, and a
//! recommendation for a target precision. Pure.

use std::fmt::Write;

use firebreak_policy::config::PolicyConfig;

use super::eval::{Evaluation, Row};

/// One swept parameter.
#[derive(Debug, Clone, PartialEq)]
pub struct Axis {
    /// The rule's name (`None`: a policy-level field).
    pub rule: Option<String>,
    /// The field.
    pub field: String,
    /// The values, in order.
    pub values: Vec<f64>,
}

impl Axis {
    /// `rule.field` or `field`.
    pub fn name(&self) -> String {
        match &self.rule {
            Some(r) => format!("{r}.{}", self.field),
            None => self.field.clone(),
        }
    }
}

const RULE_FIELDS: &[&str] = &[
    "enter",
    "exit",
    "smoothing",
    "k",
    "n",
    "within_secs",
    "hold_secs",
    "max_distance",
    "min_quality",
];
const POLICY_FIELDS: &[&str] = &["cooldown_secs", "update_interval_secs"];

/// Parses `RULE.FIELD=START:END:STEP` against `policy` (the rule must exist).
pub fn parse_axis(spec: &str, policy: &PolicyConfig) -> Result<Axis, String> {
    let (target, range) = spec
        .split_once('=')
        .ok_or_else(|| format!("{spec:?}: expected RULE.FIELD=START:END:STEP"))?;
    let (rule, field) = match target.rsplit_once('.') {
        Some((r, f)) => (Some(r.to_owned()), f.to_owned()),
        None => (None, target.to_owned()),
    };
    match &rule {
        Some(r) => {
            if !policy.rules.iter().any(|x| &x.name == r) {
                return Err(format!(
                    "{spec:?}: no rule {r:?} (rules: {})",
                    policy
                        .rules
                        .iter()
                        .map(|r| r.name.as_str())
                        .collect::<Vec<_>>()
                        .join(", ")
                ));
            }
            if !RULE_FIELDS.contains(&field.as_str()) {
                return Err(format!(
                    "{spec:?}: a rule's sweepable fields are {}",
                    RULE_FIELDS.join(", ")
                ));
            }
        }
        None if !POLICY_FIELDS.contains(&field.as_str()) => {
            return Err(format!(
                "{spec:?}: a policy's sweepable fields are {} (rule fields: RULE.FIELD)",
                POLICY_FIELDS.join(", ")
            ));
        }
        None => {}
    }
    let parts: Vec<f64> = range
        .split(':')
        .map(|p| p.trim().parse::<f64>())
        .collect::<Result<_, _>>()
        .map_err(|_| format!("{spec:?}: START:END:STEP must be numbers"))?;
    let [start, end, step] = parts[..] else {
        return Err(format!("{spec:?}: expected START:END:STEP"));
    };
    if !(start.is_finite() && end.is_finite() && step.is_finite() && step > 0.0 && end >= start) {
        return Err(format!("{spec:?}: need START <= END and STEP > 0"));
    }
    let count = ((end - start) / step + 1e-9).floor() as usize + 1;
    if count > 1000 {
        return Err(format!("{spec:?}: {count} values, at most 1000"));
    }
    let values = (0..count)
        .map(|i| ((start + i as f64 * step) * 1e9).round() / 1e9)
        .collect();
    Ok(Axis {
        rule,
        field,
        values,
    })
}

/// `config` with `axis` set to `value`.
pub fn apply(config: &mut PolicyConfig, axis: &Axis, value: f64) {
    let Some(rule) = &axis.rule else {
        match axis.field.as_str() {
            "cooldown_secs" => config.cooldown_secs = value,
            _ => config.update_interval_secs = value,
        }
        return;
    };
    let Some(r) = config.rules.iter_mut().find(|r| &r.name == rule) else {
        return;
    };
    match axis.field.as_str() {
        "enter" => r.enter = value,
        "exit" => r.exit = value,
        "smoothing" => r.smoothing = value,
        "k" => r.k = value.round().max(0.0) as usize,
        "n" => r.n = value.round().max(0.0) as usize,
        "within_secs" => r.within_secs = value,
        "hold_secs" => r.hold_secs = value,
        "max_distance" => r.max_distance = value.round().max(0.0) as u32,
        _ => r.min_quality = value.round().clamp(0.0, 255.0) as u8,
    }
}

/// A grid setting: its values (one per axis) and its policy, or why it is invalid.
#[derive(Debug, Clone)]
pub struct Setting {
    /// One value per axis.
    pub values: Vec<f64>,
    /// The policy, or the validation problems.
    pub config: Result<PolicyConfig, String>,
}

/// Every setting of the grid (the first axis varies slowest). A setting whose policy
/// does not validate (say, `enter` below `exit`) is kept with its problems.
pub fn grid(base: &PolicyConfig, axes: &[Axis]) -> Vec<Setting> {
    let mut combos: Vec<Vec<f64>> = vec![Vec::new()];
    for axis in axes {
        combos = combos
            .into_iter()
            .flat_map(|c| {
                axis.values.iter().map(move |v| {
                    let mut c = c.clone();
                    c.push(*v);
                    c
                })
            })
            .collect();
    }
    combos
        .into_iter()
        .map(|values| {
            let mut config = base.clone();
            for (axis, v) in axes.iter().zip(&values) {
                apply(&mut config, axis, *v);
            }
            let issues = config.validate();
            Setting {
                values,
                config: if issues.is_empty() {
                    Ok(config)
                } else {
                    Err(issues
                        .iter()
                        .map(|i| i.to_string())
                        .collect::<Vec<_>>()
                        .join("; "))
                },
            }
        })
        .collect()
}

/// The recommended setting for `target` precision: among settings reaching it, the
/// highest recall, then the lowest median time to detect, then the fewest escalations,
/// then the first in grid order. `None` if no setting reaches it.
pub fn recommend(rows: &[(usize, &Row)], target: f64) -> Option<usize> {
    let mut best: Option<(usize, &Row)> = None;
    for &(i, r) in rows {
        if r.precision().is_none_or(|p| p < target - 1e-12) {
            continue;
        }
        let better = match best {
            None => true,
            Some((_, b)) => {
                let (rr, br) = (r.recall().unwrap_or(0.0), b.recall().unwrap_or(0.0));
                let (rt, bt) = (
                    r.ttd_percentile(0.5).unwrap_or(f64::INFINITY),
                    b.ttd_percentile(0.5).unwrap_or(f64::INFINITY),
                );
                rr > br + 1e-12
                    || ((rr - br).abs() <= 1e-12
                        && (rt < bt || (rt == bt && r.escalations < b.escalations)))
            }
        };
        if better {
            best = Some((i, r));
        }
    }
    best.map(|(i, _)| i)
}

/// The sweep's table (and recommendation) as text.
pub fn format(
    axes: &[Axis],
    settings: &[Setting],
    evaluations: &[Option<Evaluation>],
    target: Option<f64>,
) -> String {
    let mut s = String::new();
    let names: Vec<String> = axes.iter().map(Axis::name).collect();
    let _ = writeln!(s, "sweep: {}", names.join(" x "));
    let mut head = String::new();
    for n in &names {
        let _ = write!(head, "{n:>24} ");
    }
    let _ = writeln!(
        s,
        "  {head}{:>8} {:>6} {:>6} {:>9} {:>7} {:>9} {:>9}",
        "incid.", "tp", "fp", "precision", "recall", "ttd p50", "ttd p90"
    );
    let mut rows = Vec::new();
    for (i, (setting, e)) in settings.iter().zip(evaluations).enumerate() {
        let mut vals = String::new();
        for v in &setting.values {
            let _ = write!(vals, "{:>24} ", trim(*v));
        }
        match e {
            Some(e) => {
                let r = &e.policy;
                rows.push((i, r));
                let o = |v: Option<f64>, d: usize| v.map_or("-".to_owned(), |v| format!("{v:.d$}"));
                let _ = writeln!(
                    s,
                    "  {vals}{:>8} {:>6} {:>6} {:>9} {:>7} {:>9} {:>9}",
                    r.escalations,
                    r.tp,
                    r.fp,
                    o(r.precision(), 3),
                    o(r.recall(), 3),
                    o(r.ttd_percentile(0.5), 1),
                    o(r.ttd_percentile(0.9), 1)
                );
            }
            None => {
                let _ = writeln!(
                    s,
                    "  {vals}invalid: {}",
                    setting.config.as_ref().err().map_or("", |e| e.as_str())
                );
            }
        }
    }
    if let Some(t) = target {
        match recommend(&rows, t) {
            Some(i) => {
                let set: Vec<String> = names
                    .iter()
                    .zip(&settings[i].values)
                    .map(|(n, v)| format!("{n}={}", trim(*v)))
                    .collect();
                let _ = writeln!(
                    s,
                    "recommended for precision >= {}: {}",
                    trim(t),
                    set.join(" ")
                );
            }
            None => {
                let _ = writeln!(
                    s,
                    "recommended for precision >= {}: none reaches it",
                    trim(t)
                );
            }
        }
    }
    s
}

/// A value without float noise (`0.7`, not `0.7000000000000001`).
pub fn trim(v: f64) -> String {
    let s = format!("{:.6}", v);
    let s = s.trim_end_matches('0').trim_end_matches('.');
    if s.is_empty() || s == "-" {
        "0".into()
    } else {
        s.to_owned()
    }
}

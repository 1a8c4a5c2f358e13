//! Scoring a replay's decisions against labels (pure: no I/O, no clock).
//!
//! Definitions (per policy; the same per tier and per rule, restricted to the
//! escalations to that tier, or naming that rule):
//! - an **escalation** is an `escalated` decision; the policy row counts **incidents**
//!   (escalations from tier `none`), a tier row the escalations to that tier, a rule
//!   row the escalations whose active rules include it;
//! - it is a **true positive** if a `crisis` label of its stream covers its wall time,
//!   else a **false positive** if a `benign` label does, else **unlabelled**;
//! - a crisis range is **detected** if an escalation (of the row) falls inside it;
//!   its **time to detect** is the first such escalation's wall time minus the range's
//!   start; the others are **missed**;
//! - precision = TP / (TP + FP); recall = detected / crisis ranges; percentiles are
//!   nearest-rank.

use std::collections::BTreeMap;
use std::fmt::Write;

use firebreak_policy::policy::{Decision, DecisionKind, Policy};

use super::labels::{Label, Verdict};
use super::replay::Replay;

/// One row of the table.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Row {
    /// `policy`, `tier NAME` or `rule NAME`.
    pub name: String,
    /// Escalations counted (incidents for the policy row).
    pub escalations: u64,
    /// True positives.
    pub tp: u64,
    /// False positives.
    pub fp: u64,
    /// Neither.
    pub unlabelled: u64,
    /// Crisis ranges detected.
    pub detected: u64,
    /// Crisis ranges.
    pub ranges: u64,
    /// Times to detect, seconds, sorted.
    pub ttd: Vec<f64>,
    /// The missed ranges: (stream, start ms, end ms).
    pub missed: Vec<(String, u64, u64)>,
    /// Escalations per stream-hour.
    pub per_hour: f64,
}

impl Row {
    /// TP / (TP + FP), if any.
    pub fn precision(&self) -> Option<f64> {
        let n = self.tp + self.fp;
        (n > 0).then(|| self.tp as f64 / n as f64)
    }

    /// Detected / ranges, if any.
    pub fn recall(&self) -> Option<f64> {
        (self.ranges > 0).then(|| self.detected as f64 / self.ranges as f64)
    }

    /// Nearest-rank percentile of the times to detect.
    pub fn ttd_percentile(&self, p: f64) -> Option<f64> {
        percentile(&self.ttd, p)
    }
}

/// Nearest-rank percentile of sorted values.
pub fn percentile(sorted: &[f64], p: f64) -> Option<f64> {
    if sorted.is_empty() {
        return None;
    }
    let rank = (p * sorted.len() as f64).ceil().max(1.0) as usize;
    Some(sorted[rank.min(sorted.len()) - 1])
}

/// A policy's evaluation.
#[derive(Debug, Clone, PartialEq)]
pub struct Evaluation {
    /// The policy's effective version.
    pub version: String,
    /// The policy row.
    pub policy: Row,
    /// Per tier (policy order).
    pub tiers: Vec<Row>,
    /// Per rule (policy order).
    pub rules: Vec<Row>,
}

/// Labels that apply to a replay: those of its streams, with the stream's tenant.
fn applicable<'a>(replay: &Replay, labels: &'a [Label]) -> Vec<&'a Label> {
    labels
        .iter()
        .filter(|l| {
            replay
                .streams
                .get(&l.stream)
                .is_some_and(|s| s.tenant == l.tenant)
        })
        .collect()
}

fn row(name: String, escalations: &[&Decision], labels: &[&Label], hours: f64) -> Row {
    let mut r = Row {
        name,
        ..Row::default()
    };
    for d in escalations {
        r.escalations += 1;
        let covering = labels.iter().filter(|l| l.covers(&d.stream_id, d.wall_ms));
        let mut verdict = None;
        for l in covering {
            if l.verdict == Verdict::Crisis {
                verdict = Some(Verdict::Crisis);
                break;
            }
            verdict = Some(Verdict::Benign);
        }
        match verdict {
            Some(Verdict::Crisis) => r.tp += 1,
            Some(Verdict::Benign) => r.fp += 1,
            None => r.unlabelled += 1,
        }
    }
    r.per_hour = if hours > 0.0 {
        r.escalations as f64 / hours
    } else {
        0.0
    };
    r
}

fn detection(r: &mut Row, detecting: &[&Decision], labels: &[&Label]) {
    for l in labels.iter().filter(|l| l.verdict == Verdict::Crisis) {
        r.ranges += 1;
        let first = detecting
            .iter()
            .filter(|d| l.covers(&d.stream_id, d.wall_ms))
            .map(|d| d.wall_ms)
            .min();
        match first {
            Some(t) => {
                r.detected += 1;
                r.ttd.push((t - l.start_ms) as f64 / 1000.0);
            }
            None => r.missed.push((l.stream.clone(), l.start_ms, l.end_ms)),
        }
    }
    r.ttd.sort_by(f64::total_cmp);
    r.missed.sort();
}

/// Scores one policy's decisions (`replay.decisions[index]`).
pub fn evaluate(replay: &Replay, index: usize, policy: &Policy, labels: &[Label]) -> Evaluation {
    let labels = applicable(replay, labels);
    let hours = replay.stream_hours();
    let escalated: Vec<&Decision> = replay.decisions[index]
        .iter()
        .filter(|d| d.kind == DecisionKind::Escalated)
        .collect();
    let incidents: Vec<&Decision> = escalated
        .iter()
        .copied()
        .filter(|d| d.previous_tier == "none")
        .collect();
    let mut overall = row("policy".into(), &incidents, &labels, hours);
    detection(&mut overall, &escalated, &labels);
    let tiers = policy
        .config()
        .tiers
        .iter()
        .map(|t| {
            let e: Vec<&Decision> = escalated.iter().copied().filter(|d| &d.tier == t).collect();
            let mut r = row(format!("tier {t}"), &e, &labels, hours);
            detection(&mut r, &e, &labels);
            r
        })
        .collect();
    let rules = policy
        .config()
        .rules
        .iter()
        .map(|rule| {
            let e: Vec<&Decision> = escalated
                .iter()
                .copied()
                .filter(|d| d.rules.iter().any(|n| n == &rule.name))
                .collect();
            let mut r = row(format!("rule {}", rule.name), &e, &labels, hours);
            detection(&mut r, &e, &labels);
            r
        })
        .collect();
    Evaluation {
        version: policy.version().to_owned(),
        policy: overall,
        tiers,
        rules,
    }
}

fn opt(v: Option<f64>, decimals: usize) -> String {
    v.map_or_else(|| "-".to_owned(), |v| format!("{v:.decimals$}"))
}

/// The header of a replay's text report.
pub fn summary(replay: &Replay, labels: &[Label]) -> String {
    let applicable = applicable(replay, labels);
    let crisis = applicable
        .iter()
        .filter(|l| l.verdict == Verdict::Crisis)
        .count();
    let mut s = String::new();
    let st = &replay.stats;
    let _ = writeln!(
        s,
        "signals: {} streams, {} frames, {:.2} stream-hours; labels: {} ranges ({} crisis)",
        replay.streams.len(),
        replay.frames,
        replay.stream_hours(),
        applicable.len(),
        crisis
    );
    let _ = writeln!(
        s,
        "log: {} segments, {} blocks, {} records; errors: {} corrupt blocks, {} truncated tails, {} foreign files, {} bad records",
        st.segments,
        st.blocks,
        st.records,
        st.corrupt,
        st.truncated,
        st.foreign,
        replay.bad_records
    );
    s
}

/// A policy's evaluation as text: one line per row, then the missed ranges.
pub fn format(e: &Evaluation) -> String {
    let mut s = String::new();
    let _ = writeln!(s, "policy {}", e.version);
    let _ = writeln!(
        s,
        "  {:<40} {:>8} {:>6} {:>6} {:>6} {:>9} {:>7} {:>13} {:>9} {:>9} {:>10}",
        "row",
        "escal.",
        "tp",
        "fp",
        "unlab",
        "precision",
        "recall",
        "detected",
        "ttd p50",
        "ttd p90",
        "per s-hour"
    );
    for r in std::iter::once(&e.policy).chain(&e.tiers).chain(&e.rules) {
        let _ = writeln!(
            s,
            "  {:<40} {:>8} {:>6} {:>6} {:>6} {:>9} {:>7} {:>13} {:>9} {:>9} {:>10.4}",
            r.name,
            r.escalations,
            r.tp,
            r.fp,
            r.unlabelled,
            opt(r.precision(), 3),
            opt(r.recall(), 3),
            format!("{}/{}", r.detected, r.ranges),
            opt(r.ttd_percentile(0.5), 1),
            opt(r.ttd_percentile(0.9), 1),
            r.per_hour
        );
    }
    if !e.policy.missed.is_empty() {
        let _ = writeln!(s, "  missed crisis ranges:");
        for (stream, a, b) in &e.policy.missed {
            let _ = writeln!(
                s,
                "    {stream} {} .. {}",
                firebreak_policy::event::rfc3339(*a),
                firebreak_policy::event::rfc3339(*b)
            );
        }
    }
    s
}

/// Per stream: escalations of policy `a` and `b` (counts), for the diff of a dry-run
/// or a comparison.
pub fn per_stream(replay: &Replay, a: usize, b: usize) -> BTreeMap<String, (u64, u64)> {
    let mut out: BTreeMap<String, (u64, u64)> =
        replay.streams.keys().map(|k| (k.clone(), (0, 0))).collect();
    for (i, slot) in [(a, 0), (b, 1)] {
        for d in &replay.decisions[i] {
            if d.kind == DecisionKind::Escalated {
                let e = out.entry(d.stream_id.clone()).or_default();
                if slot == 0 {
                    e.0 += 1;
                } else {
                    e.1 += 1;
                }
            }
        }
    }
    out
}

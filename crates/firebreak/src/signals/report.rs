//! The replay's HTML report: one self-contained file (inline CSS and SVG, no script, no
//! external asset) with the precision-recall curve of a sweep (or each policy's point),
//! the time-to-detect histogram and per-stream timelines with two policies' tiers
//! overlaid on the labelled ranges. Pure: the caller writes the string.

use std::fmt::Write;

use firebreak_policy::policy::{Decision, Policy};

use super::eval::Evaluation;
use super::labels::{Label, Verdict};
use super::replay::Replay;

/// A point of the precision-recall curve.
#[derive(Debug, Clone)]
pub struct CurvePoint {
    /// The setting's label.
    pub label: String,
    /// Recall.
    pub recall: f64,
    /// Precision.
    pub precision: f64,
}

/// What the report shows.
#[derive(Debug)]
pub struct ReportInput<'a> {
    /// The replay.
    pub replay: &'a Replay,
    /// The labels.
    pub labels: &'a [Label],
    /// The policies replayed (index 0 first; the timelines overlay 0 and 1).
    pub policies: &'a [std::sync::Arc<Policy>],
    /// Their evaluations (same order).
    pub evaluations: &'a [Evaluation],
    /// The sweep's curve (empty: one point per policy).
    pub curve: Vec<CurvePoint>,
    /// Most streams drawn.
    pub max_streams: usize,
}

fn esc(s: &str) -> String {
    s.replace('&', "&amp;")
        .replace('<', "&lt;")
        .replace('>', "&gt;")
        .replace('"', "&quot;")
}

const W: f64 = 640.0;
const H: f64 = 320.0;
const M: f64 = 40.0;

fn pr_curve(points: &[CurvePoint]) -> String {
    let mut s = String::new();
    let x = |r: f64| M + r * (W - 2.0 * M);
    let y = |p: f64| H - M - p * (H - 2.0 * M);
    let _ = write!(
        s,
        r#"<svg id="pr-curve" xmlns="http://www.w3.org/2000/svg" width="{W}" height="{H}" viewBox="0 0 {W} {H}" role="img"><title>precision-recall</title>"#
    );
    axes(&mut s, "recall", "precision");
    let mut sorted: Vec<&CurvePoint> = points.iter().collect();
    sorted.sort_by(|a, b| {
        a.recall
            .total_cmp(&b.recall)
            .then(b.precision.total_cmp(&a.precision))
    });
    if sorted.len() > 1 {
        let path: Vec<String> = sorted
            .iter()
            .map(|p| format!("{:.1},{:.1}", x(p.recall), y(p.precision)))
            .collect();
        let _ = write!(
            s,
            r##"<polyline fill="none" stroke="#36c" stroke-width="1.5" points="{}"/>"##,
            path.join(" ")
        );
    }
    for p in &sorted {
        let _ = write!(
            s,
            r##"<circle class="pt" cx="{:.1}" cy="{:.1}" r="4" fill="#36c"><title>{} (recall {:.3}, precision {:.3})</title></circle>"##,
            x(p.recall),
            y(p.precision),
            esc(&p.label),
            p.recall,
            p.precision
        );
    }
    s.push_str("</svg>");
    s
}

fn axes(s: &mut String, xl: &str, yl: &str) {
    let _ = write!(
        s,
        r##"<line x1="{M}" y1="{b}" x2="{r}" y2="{b}" stroke="#444"/><line x1="{M}" y1="{M}" x2="{M}" y2="{b}" stroke="#444"/><text x="{cx}" y="{ty}" text-anchor="middle" font-size="12">{xl}</text><text x="12" y="{cy}" font-size="12" transform="rotate(-90 12 {cy})" text-anchor="middle">{yl}</text>"##,
        b = H - M,
        r = W - M,
        cx = W / 2.0,
        ty = H - 8.0,
        cy = H / 2.0
    );
    for i in 0..=4 {
        let f = i as f64 / 4.0;
        let _ = write!(
            s,
            r##"<text x="{:.1}" y="{:.1}" font-size="10" text-anchor="middle">{f}</text><text x="{:.1}" y="{:.1}" font-size="10" text-anchor="end">{f}</text>"##,
            M + f * (W - 2.0 * M),
            H - M + 14.0,
            M - 4.0,
            H - M - f * (H - 2.0 * M) + 3.0
        );
    }
}

fn histogram(ttd: &[f64]) -> String {
    let mut s = String::new();
    let _ = write!(
        s,
        r#"<svg id="ttd-histogram" xmlns="http://www.w3.org/2000/svg" width="{W}" height="{H}" viewBox="0 0 {W} {H}" role="img"><title>time to detect</title>"#
    );
    if ttd.is_empty() {
        s.push_str(r#"<text x="20" y="40">no detections</text></svg>"#);
        return s;
    }
    let max = ttd.iter().copied().fold(0.0f64, f64::max).max(1.0);
    const BINS: usize = 20;
    let width = max / BINS as f64;
    let mut counts = [0u64; BINS];
    for &t in ttd {
        counts[((t / width) as usize).min(BINS - 1)] += 1;
    }
    let top = counts.iter().copied().max().unwrap_or(1).max(1) as f64;
    let bw = (W - 2.0 * M) / BINS as f64;
    let _ = write!(
        s,
        r##"<line x1="{M}" y1="{b}" x2="{r}" y2="{b}" stroke="#444"/><text x="{cx}" y="{ty}" text-anchor="middle" font-size="12">seconds to detect (0 to {max:.1})</text>"##,
        b = H - M,
        r = W - M,
        cx = W / 2.0,
        ty = H - 8.0
    );
    for (i, c) in counts.iter().enumerate() {
        let h = *c as f64 / top * (H - 2.0 * M);
        let _ = write!(
            s,
            r##"<rect class="bar" x="{:.1}" y="{:.1}" width="{:.1}" height="{:.1}" fill="#c63"><title>{:.1}-{:.1} s: {c}</title></rect>"##,
            M + i as f64 * bw + 1.0,
            H - M - h,
            bw - 2.0,
            h,
            i as f64 * width,
            (i + 1) as f64 * width
        );
    }
    s.push_str("</svg>");
    s
}

/// (wall ms, tier index) steps of one stream's decisions.
fn steps(decisions: &[Decision], stream: &str, policy: &Policy) -> Vec<(u64, usize)> {
    decisions
        .iter()
        .filter(|d| d.stream_id == stream)
        .map(|d| {
            (
                d.wall_ms,
                policy.config().tier_index(&d.tier).map_or(0, |i| i + 1),
            )
        })
        .collect()
}

fn timeline(input: &ReportInput<'_>, stream: &str) -> String {
    let info = &input.replay.streams[stream];
    let (t0, t1) = (info.first_ms, info.last_ms.max(info.first_ms + 1));
    let tw = W * 1.5;
    let x = |t: u64| M + (t.saturating_sub(t0)) as f64 / (t1 - t0) as f64 * (tw - 2.0 * M);
    let mut s = String::new();
    let _ = write!(
        s,
        r#"<svg class="timeline" xmlns="http://www.w3.org/2000/svg" width="{tw}" height="70" viewBox="0 0 {tw} 70" role="img"><title>{}</title>"#,
        esc(stream)
    );
    for l in input
        .labels
        .iter()
        .filter(|l| l.stream == stream && l.tenant == info.tenant)
    {
        let colour = match l.verdict {
            Verdict::Crisis => "#f4b4b4",
            Verdict::Benign => "#e4f0e4",
        };
        let _ = write!(
            s,
            r#"<rect x="{:.1}" y="4" width="{:.1}" height="62" fill="{colour}"/>"#,
            x(l.start_ms.max(t0)),
            (x(l.end_ms.min(t1)) - x(l.start_ms.max(t0))).max(1.0)
        );
    }
    let colours = ["#1a5fb4", "#e66100"];
    for (lane, p) in input.policies.iter().take(2).enumerate() {
        let tiers = p.config().tiers.len().max(1) as f64;
        let y0 = 8.0 + lane as f64 * 30.0;
        let steps = steps(&input.replay.decisions[lane], stream, p);
        let mut points = vec![format!("{:.1},{:.1}", x(t0), y0 + 24.0)];
        let mut level = 0usize;
        for (t, tier) in steps {
            let yy = |lv: usize| y0 + 24.0 - lv as f64 / tiers * 22.0;
            points.push(format!("{:.1},{:.1}", x(t), yy(level)));
            points.push(format!("{:.1},{:.1}", x(t), yy(tier)));
            level = tier;
        }
        let yy = y0 + 24.0 - level as f64 / tiers * 22.0;
        points.push(format!("{:.1},{:.1}", x(t1), yy));
        let _ = write!(
            s,
            r#"<polyline class="tier" fill="none" stroke="{}" stroke-width="1.5" points="{}"><title>{}</title></polyline>"#,
            colours[lane],
            points.join(" "),
            esc(p.version())
        );
    }
    let _ = write!(
        s,
        r#"<text x="2" y="12" font-size="10">{}</text></svg>"#,
        esc(stream)
    );
    s
}

/// The report.
pub fn render(input: &ReportInput<'_>) -> String {
    let mut s = String::new();
    s.push_str("<!DOCTYPE html>\n<html lang=\"en\"><head><meta charset=\"utf-8\"><title>Firebreak replay report</title><style>body{font:14px sans-serif;margin:24px;color:#222}table{border-collapse:collapse}td,th{padding:2px 8px;border-bottom:1px solid #ddd;text-align:right}td:first-child,th:first-child{text-align:left}.legend span{display:inline-block;width:12px;height:12px;margin:0 4px 0 12px;vertical-align:middle}</style></head><body>\n");
    s.push_str("<h1>Firebreak replay report</h1>\n");
    let _ = writeln!(
        s,
        "<p>{} streams, {} frames, {:.2} stream-hours; log errors: {}.</p>",
        input.replay.streams.len(),
        input.replay.frames,
        input.replay.stream_hours(),
        input.replay.stats.errors() + input.replay.bad_records
    );
    s.push_str("<h2>Policies</h2><table><tr><th>policy</th><th>incidents</th><th>TP</th><th>FP</th><th>precision</th><th>recall</th><th>ttd p50 (s)</th><th>ttd p90 (s)</th></tr>\n");
    for e in input.evaluations {
        let r = &e.policy;
        let o = |v: Option<f64>, d: usize| v.map_or("-".to_owned(), |v| format!("{v:.d$}"));
        let _ = writeln!(
            s,
            "<tr><td>{}</td><td>{}</td><td>{}</td><td>{}</td><td>{}</td><td>{}</td><td>{}</td><td>{}</td></tr>",
            esc(&e.version),
            r.escalations,
            r.tp,
            r.fp,
            o(r.precision(), 3),
            o(r.recall(), 3),
            o(r.ttd_percentile(0.5), 1),
            o(r.ttd_percentile(0.9), 1)
        );
    }
    s.push_str("</table>\n<h2>Precision and recall</h2>\n");
    let curve = if input.curve.is_empty() {
        input
            .evaluations
            .iter()
            .map(|e| CurvePoint {
                label: e.version.clone(),
                recall: e.policy.recall().unwrap_or(0.0),
                precision: e.policy.precision().unwrap_or(0.0),
            })
            .collect()
    } else {
        input.curve.clone()
    };
    s.push_str(&pr_curve(&curve));
    s.push_str("\n<h2>Time to detect</h2>\n");
    if let Some(e) = input.evaluations.first() {
        s.push_str(&histogram(&e.policy.ttd));
    }
    s.push_str("\n<h2>Streams</h2>\n<p class=\"legend\">");
    for (i, p) in input.policies.iter().take(2).enumerate() {
        let _ = write!(
            s,
            "<span style=\"background:{}\"></span>{}",
            ["#1a5fb4", "#e66100"][i],
            esc(p.version())
        );
    }
    s.push_str("<span style=\"background:#f4b4b4\"></span>crisis label<span style=\"background:#e4f0e4\"></span>benign label</p>\n");
    // The streams with escalations or crisis labels first, then the rest, by id.
    let mut streams: Vec<(&String, bool)> = input
        .replay
        .streams
        .keys()
        .map(|id| {
            let busy = input
                .replay
                .decisions
                .iter()
                .take(2)
                .any(|ds| ds.iter().any(|d| &d.stream_id == id))
                || input
                    .labels
                    .iter()
                    .any(|l| &l.stream == id && l.verdict == Verdict::Crisis);
            (id, busy)
        })
        .collect();
    streams.sort_by(|a, b| b.1.cmp(&a.1).then(a.0.cmp(b.0)));
    for (id, _) in streams.iter().take(input.max_streams) {
        s.push_str(&timeline(input, id));
        s.push('\n');
    }
    if streams.len() > input.max_streams {
        let _ = writeln!(
            s,
            "<p>{} more streams not drawn.</p>",
            streams.len() - input.max_streams
        );
    }
    s.push_str("</body></html>\n");
    s
}

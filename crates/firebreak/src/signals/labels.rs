//! Labels: an operator's verdict on a stream's wall-time range (a true crisis, or
//! benign), stored beside the signal log in `labels.jsonl` (one JSON object a line,
//! appended and synced), imported from CSV or set through the API.
//!
//! CSV: `stream,start,end,label[,tenant[,note]]`, a header line allowed; times are Unix
//! milliseconds or RFC 3339 UTC (`2026-11-28T15:01:46Z`, optional fraction); labels
//! `crisis` (or `true_crisis`) and `benign`. A file with any bad line imports nothing:
//! every problem is reported with its line number.

use std::io::Write;
use std::path::{Path, PathBuf};

use firebreak_policy::Issue;
use serde::{Deserialize, Serialize};

/// The labels file in a signal log directory.
pub const LABELS_FILE: &str = "labels.jsonl";

/// An operator's verdict.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(rename_all = "snake_case")]
pub enum Verdict {
    /// A true crisis: escalations inside are true positives; one is expected.
    Crisis,
    /// Benign: escalations inside are false positives.
    Benign,
}

/// A labelled range of a stream's wall time.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
pub struct Label {
    /// The stream.
    pub stream: String,
    /// The tenant the stream belongs to.
    pub tenant: String,
    /// Start, Unix ms (inclusive).
    pub start_ms: u64,
    /// End, Unix ms (exclusive).
    pub end_ms: u64,
    /// The verdict.
    pub verdict: Verdict,
    /// Who set it (a credential's tenant or `csv`).
    #[serde(default)]
    pub by: String,
    /// A note.
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub note: String,
}

impl Label {
    /// Whether `wall_ms` of `stream` is inside.
    pub fn covers(&self, stream: &str, wall_ms: u64) -> bool {
        self.stream == stream && self.start_ms <= wall_ms && wall_ms < self.end_ms
    }
}

/// The labels file of the log in `dir`.
pub fn path(dir: &Path) -> PathBuf {
    dir.join(LABELS_FILE)
}

/// Reads the labels of the log in `dir` (none if there is no file). A line that does
/// not parse is an error naming it.
pub fn load(dir: &Path) -> anyhow::Result<Vec<Label>> {
    let text = match std::fs::read_to_string(path(dir)) {
        Ok(t) => t,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(Vec::new()),
        Err(e) => return Err(e.into()),
    };
    text.lines()
        .enumerate()
        .filter(|(_, l)| !l.trim().is_empty())
        .map(|(i, l)| {
            serde_json::from_str(l)
                .map_err(|e| anyhow::anyhow!("{}:{}: {e}", path(dir).display(), i + 1))
        })
        .collect()
}

/// Appends labels to the log's labels file and syncs it (blocking).
pub fn append(dir: &Path, labels: &[Label]) -> std::io::Result<()> {
    std::fs::create_dir_all(dir)?;
    let mut text = String::new();
    for l in labels {
        text.push_str(&serde_json::to_string(l).expect("a label is JSON"));
        text.push('\n');
    }
    let mut f = std::fs::OpenOptions::new()
        .create(true)
        .append(true)
        .open(path(dir))?;
    f.write_all(text.as_bytes())?;
    f.sync_data()
}

/// Checks a label's fields (the API's and the CSV's rule).
pub fn check(label: &Label, at: &str) -> Vec<Issue> {
    let mut out = Vec::new();
    if label.stream.is_empty() || label.stream.len() > 256 {
        out.push(Issue::new(format!("{at}stream"), "1 to 256 characters"));
    }
    if label.end_ms <= label.start_ms {
        out.push(Issue::new(
            format!("{at}end"),
            format!(
                "must be after the start ({} <= {})",
                label.end_ms, label.start_ms
            ),
        ));
    }
    out
}

/// Parses a label CSV (see the module doc); `tenant` is used where a line names none.
pub fn parse_csv(text: &str, tenant: &str) -> Result<Vec<Label>, Vec<Issue>> {
    let mut out = Vec::new();
    let mut issues = Vec::new();
    for (i, line) in text.lines().enumerate() {
        let n = i + 1;
        let line = line.trim();
        if line.is_empty() || line.starts_with('#') {
            continue;
        }
        let cols: Vec<&str> = line.split(',').map(str::trim).collect();
        if i == 0 && cols.first() == Some(&"stream") {
            continue;
        }
        let at = format!("line {n}: ");
        if !(4..=6).contains(&cols.len()) {
            issues.push(Issue::new(
                format!("line {n}"),
                format!(
                    "expected stream,start,end,label[,tenant[,note]], got {} fields",
                    cols.len()
                ),
            ));
            continue;
        }
        let start = parse_time(cols[1]);
        let end = parse_time(cols[2]);
        let verdict = match cols[3].to_ascii_lowercase().as_str() {
            "crisis" | "true_crisis" | "true-crisis" => Some(Verdict::Crisis),
            "benign" => Some(Verdict::Benign),
            _ => None,
        };
        let mut bad = false;
        for (f, v) in [("start", &start), ("end", &end)] {
            if v.is_none() {
                bad = true;
                issues.push(Issue::new(
                    format!("{at}{f}"),
                    "not Unix milliseconds or RFC 3339 UTC",
                ));
            }
        }
        if verdict.is_none() {
            bad = true;
            issues.push(Issue::new(
                format!("{at}label"),
                format!("{:?}: expected crisis or benign", cols[3]),
            ));
        }
        if bad {
            continue;
        }
        let label = Label {
            stream: cols[0].to_owned(),
            tenant: cols
                .get(4)
                .filter(|t| !t.is_empty())
                .map_or(tenant, |t| t)
                .to_owned(),
            start_ms: start.expect("checked"),
            end_ms: end.expect("checked"),
            verdict: verdict.expect("checked"),
            by: "csv".into(),
            note: cols.get(5).map(|s| s.to_string()).unwrap_or_default(),
        };
        let found = check(&label, &at);
        if found.is_empty() {
            out.push(label);
        } else {
            issues.extend(found);
        }
    }
    if issues.is_empty() {
        Ok(out)
    } else {
        Err(issues)
    }
}

/// Unix milliseconds, or RFC 3339 UTC (`Z`) with an optional fraction.
pub fn parse_time(s: &str) -> Option<u64> {
    if !s.is_empty() && s.bytes().all(|b| b.is_ascii_digit()) {
        return s.parse().ok();
    }
    let s = s.strip_suffix('Z').or_else(|| s.strip_suffix('z'))?;
    let (date, time) = s.split_once(['T', 't'])?;
    let mut d = date.split('-');
    let (y, mo, da): (i64, i64, i64) = (
        d.next()?.parse().ok()?,
        d.next()?.parse().ok()?,
        d.next()?.parse().ok()?,
    );
    if d.next().is_some() || !(1..=12).contains(&mo) || !(1..=31).contains(&da) || y < 1970 {
        return None;
    }
    let (hms, frac) = time.split_once('.').unwrap_or((time, ""));
    let mut t = hms.split(':');
    let (h, mi, se): (u64, u64, u64) = (
        t.next()?.parse().ok()?,
        t.next()?.parse().ok()?,
        t.next()?.parse().ok()?,
    );
    if t.next().is_some() || h > 23 || mi > 59 || se > 60 {
        return None;
    }
    let ms = if frac.is_empty() {
        0
    } else {
        if !frac.bytes().all(|b| b.is_ascii_digit()) {
            return None;
        }
        let f: String = frac.chars().chain("000".chars()).take(3).collect();
        f.parse::<u64>().ok()?
    };
    // Days from civil (proleptic Gregorian).
    let y = if mo <= 2 { y - 1 } else { y };
    let era = y.div_euclid(400);
    let yoe = y - era * 400;
    let mp = (mo + 9) % 12;
    let doy = (153 * mp + 2) / 5 + da - 1;
    let doe = yoe * 365 + yoe / 4 - yoe / 100 + doy;
    let days = (era * 146_097 + doe - 719_468) as u64;
    Some(((days * 86_400 + h * 3600 + mi * 60 + se) * 1000) + ms)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rfc3339_times_parse_to_the_instants_they_name() {
        // 2026-11-28T15:01:46.123Z, as `firebreak_policy::event::rfc3339` formats it.
        let ms = 1_795_878_106_123;
        assert_eq!(
            firebreak_policy::event::rfc3339(ms),
            "2026-11-28T15:01:46.123Z"
        );
        assert_eq!(parse_time("2026-11-28T15:01:46.123Z"), Some(ms));
        assert_eq!(parse_time("1970-01-01T00:00:00Z"), Some(0));
        assert_eq!(parse_time("2000-03-01T00:00:00.5Z"), Some(951_868_800_500));
        assert_eq!(parse_time("12345"), Some(12345));
        for bad in ["", "-5", "2026-13-01T00:00:00Z", "2026-11-28T15:01:46", "x"] {
            assert_eq!(parse_time(bad), None, "{bad}");
        }
    }
}

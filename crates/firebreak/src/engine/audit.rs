//! The audit log: every policy change, reload, acknowledgement and resolution, with
//! who, when, and old -> new. Appended (and synced) to `audit.jsonl`, the last
//! [`KEPT`] entries also kept in memory for `GET /v1/audit`.

use std::collections::VecDeque;
use std::fs::OpenOptions;
use std::io::Write;
use std::path::PathBuf;
use std::sync::Mutex;

use serde::Serialize;
use serde_json::Value;

/// Entries kept in memory.
pub const KEPT: usize = 1000;

/// One line of the audit log (its fields in the order of the file's lines since
/// version 1: alphabetical).
#[derive(Debug, Clone, PartialEq, Serialize, utoipa::ToSchema)]
pub struct AuditEntry {
    /// What was done: `policy.update`, `policy.rule`, `escalation.ack`,
    /// `escalation.resolve`, `reload` or `auth.denied`.
    #[schema(example = "escalation.ack")]
    pub action: String,
    /// When, Unix milliseconds.
    pub at_ms: u64,
    /// The value after (any JSON).
    pub new: Value,
    /// The value before (any JSON).
    pub old: Value,
    /// What it was done to: an escalation id, a rule name, `policy`, `banks`,
    /// `credentials`, or the denied request (`METHOD /path`).
    pub target: String,
    /// The tenant who did it (`SIGHUP` for a signal; `TENANT@ADDRESS` or
    /// `anonymous@ADDRESS` for a denied request). Always in the file; `GET /v1/policy`
    /// leaves it out of the policy history for callers without the `admin` scope.
    #[serde(skip_serializing_if = "Option::is_none")]
    #[schema(nullable = false)]
    pub who: Option<String>,
}

/// See the module doc.
#[derive(Debug)]
pub struct AuditLog {
    path: PathBuf,
    recent: Mutex<VecDeque<AuditEntry>>,
}

impl AuditLog {
    /// A log appending to `path`.
    pub fn new(path: PathBuf) -> AuditLog {
        AuditLog {
            path,
            recent: Mutex::new(VecDeque::new()),
        }
    }

    /// Appends one entry at wall time `at_ms`, synced before this returns. Blocking
    /// (a write and an fdatasync): call it from a blocking thread or through
    /// `spawn_blocking`, never on the async runtime. A write failure is logged as an
    /// error; the entry is still kept in memory.
    pub fn append(
        &self,
        at_ms: u64,
        who: &str,
        action: &str,
        target: &str,
        old: Value,
        new: Value,
    ) {
        let entry = AuditEntry {
            action: action.to_owned(),
            at_ms,
            new,
            old,
            target: target.to_owned(),
            who: Some(who.to_owned()),
        };
        let line = serde_json::to_string(&entry).expect("an audit entry is JSON");
        tracing::info!(target: "audit", who, action, target, "audit");
        let written = OpenOptions::new()
            .create(true)
            .append(true)
            .open(&self.path)
            // One write per line: concurrent appends (O_APPEND) never interleave.
            .and_then(|mut f| {
                f.write_all(format!("{line}\n").as_bytes())
                    .and_then(|()| f.sync_data())
            });
        if let Err(e) = written {
            tracing::error!(error = %e, path = %self.path.display(), "could not write the audit log");
        }
        let mut recent = self.recent.lock().unwrap_or_else(|e| e.into_inner());
        if recent.len() == KEPT {
            recent.pop_front();
        }
        recent.push_back(entry);
    }

    /// The entries kept in memory, oldest first.
    pub fn entries(&self) -> Vec<AuditEntry> {
        self.recent
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .iter()
            .cloned()
            .collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn appends_to_the_file_and_keeps_the_last_entries() {
        let dir = tempfile::tempdir().unwrap();
        let log = AuditLog::new(dir.path().join("audit.jsonl"));
        for i in 0..(KEPT as u64 + 2) {
            log.append(i, "op", "policy.rule", "r", json!(i), json!(i + 1));
        }
        let entries = log.entries();
        assert_eq!(entries.len(), KEPT);
        assert_eq!(entries[0].at_ms, 2);
        assert_eq!(entries[KEPT - 1].new, KEPT as u64 + 2);
        let text = std::fs::read_to_string(dir.path().join("audit.jsonl")).unwrap();
        let lines: Vec<Value> = text
            .lines()
            .map(|l| serde_json::from_str(l).unwrap())
            .collect();
        assert_eq!(lines.len(), KEPT + 2);
        assert_eq!(
            lines[0],
            json!({"at_ms": 0, "who": "op", "action": "policy.rule", "target": "r", "old": 0, "new": 1})
        );
        // Byte for byte what earlier versions wrote (keys in alphabetical order).
        assert_eq!(
            text.lines().next().unwrap(),
            r#"{"action":"policy.rule","at_ms":0,"new":1,"old":0,"target":"r","who":"op"}"#
        );
    }

    #[test]
    fn a_failed_write_keeps_the_entry_in_memory() {
        let dir = tempfile::tempdir().unwrap();
        // A directory where the file should be: every append fails.
        let log = AuditLog::new(dir.path().to_path_buf());
        log.append(5, "op", "reload", "banks", json!(null), json!(null));
        assert_eq!(log.entries().len(), 1);
    }
}

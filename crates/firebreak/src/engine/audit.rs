//! The audit log: every policy change, reload, acknowledgement and resolution, with
//! who, when, and old -> new. Appended (and synced) to `audit.jsonl`, the last
//! [`KEPT`] entries also kept in memory for `GET /v1/audit`.

use std::collections::VecDeque;
use std::fs::OpenOptions;
use std::io::Write;
use std::path::PathBuf;
use std::sync::Mutex;

use serde_json::{Value, json};

/// Entries kept in memory.
pub const KEPT: usize = 1000;

/// See the module doc.
#[derive(Debug)]
pub struct AuditLog {
    path: PathBuf,
    recent: Mutex<VecDeque<Value>>,
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
        let entry = json!({"at_ms": at_ms, "who": who, "action": action, "target": target, "old": old, "new": new});
        tracing::info!(target: "audit", who, action, target, "audit");
        let written = OpenOptions::new()
            .create(true)
            .append(true)
            .open(&self.path)
            // One write per line: concurrent appends (O_APPEND) never interleave.
            .and_then(|mut f| {
                f.write_all(format!("{entry}\n").as_bytes())
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
    pub fn entries(&self) -> Vec<Value> {
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

    #[test]
    fn appends_to_the_file_and_keeps_the_last_entries() {
        let dir = tempfile::tempdir().unwrap();
        let log = AuditLog::new(dir.path().join("audit.jsonl"));
        for i in 0..(KEPT as u64 + 2) {
            log.append(i, "op", "policy.rule", "r", json!(i), json!(i + 1));
        }
        let entries = log.entries();
        assert_eq!(entries.len(), KEPT);
        assert_eq!(entries[0]["at_ms"], 2);
        assert_eq!(entries[KEPT - 1]["new"], KEPT as u64 + 2);
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

//! The audit log: every policy change, reload, acknowledgement and resolution, with
//! who (tenant and credential), when, and old -> new. Appended (and synced) to
//! `audit.jsonl`, the last [`KEPT`] entries also kept in memory for `GET /v1/audit`
//! (read back from the file at start).
//!
//! Tamper-evident: each entry (format `"v": 2`) carries `prev`, the sha256 (hex) of the
//! previous line's bytes ([`GENESIS`] for the first), so changing or deleting a line
//! breaks the chain at the next one; [`verify`] (`firebreak audit verify`) walks it.
//! The head (the sha256 of the last line) is published in the metrics
//! (`firebreak_audit_head{head=…} 1`) and in every policy change's answer and event, so
//! cutting off the tail is detectable against what was published. Lines written before
//! the chain (no `v`) are accepted only before the first chained line.

use std::collections::VecDeque;
use std::fs::{File, OpenOptions};
use std::io::{self, BufRead, BufReader, Read, Seek, SeekFrom, Write};
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};

use firebreak_delivery::{FileSync, Syncer};
use serde::{Deserialize, Serialize};
use serde_json::Value;
use sha2::{Digest, Sha256};

use super::versions::hex;

/// Entries kept in memory.
pub const KEPT: usize = 1000;

/// One line of the audit log (its fields in the order of the file's lines since
/// version 1: alphabetical).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, utoipa::ToSchema)]
pub struct AuditEntry {
    /// What was done: `policy.update`, `policy.rule`, `escalation.ack`,
    /// `escalation.resolve`, `reload` or `auth.denied`.
    #[schema(example = "escalation.ack")]
    pub action: String,
    /// When, Unix milliseconds.
    pub at_ms: u64,
    /// The credential used: `token:` and the first 8 hex digits of its sha256, or
    /// `hmac:TENANT` (absent for signals and older entries).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schema(nullable = false)]
    pub credential: Option<String>,
    /// The value after (any JSON).
    pub new: Value,
    /// The value before (any JSON).
    pub old: Value,
    /// The sha256 (hex) of the previous line ([`GENESIS`] for the first); absent in
    /// lines written before the chain.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schema(nullable = false)]
    pub prev: Option<String>,
    /// What it was done to: an escalation id, a rule name, `policy`, `banks`,
    /// `credentials`, or the denied request (`METHOD /path`).
    pub target: String,
    /// The entry format ([`FORMAT_VERSION`]); absent in lines written before it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schema(nullable = false)]
    pub v: Option<u64>,
    /// The tenant who did it (`SIGHUP` for a signal; `TENANT@ADDRESS` or
    /// `anonymous@ADDRESS` for a denied request). Always in the file; `GET /v1/policy`
    /// leaves it out of the policy history for callers without the `admin` scope.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schema(nullable = false)]
    pub who: Option<String>,
}

/// The current entry format (the `v` field).
pub const FORMAT_VERSION: u64 = 2;

/// `prev` of the first entry.
pub const GENESIS: &str = "0000000000000000000000000000000000000000000000000000000000000000";

/// The sha256 (hex) of one line's bytes (without its newline).
pub fn line_hash(line: &str) -> String {
    hex(&Sha256::digest(line.as_bytes()))
}

/// Told `(old_head, new_head)` after each append.
pub type HeadHook = Box<dyn Fn(&str, &str) + Send + Sync>;

/// See the module doc.
pub struct AuditLog {
    path: PathBuf,
    /// How writes are made durable.
    sync: Arc<dyn Syncer>,
    /// The chain's head, held across each append (its write and sync) so entries chain
    /// in order; readers use `recent` and `head` instead.
    writer: Mutex<String>,
    recent: Mutex<VecDeque<AuditEntry>>,
    head: Mutex<String>,
    on_head: Mutex<Option<HeadHook>>,
}

impl std::fmt::Debug for AuditLog {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("AuditLog")
            .field("path", &self.path)
            .finish_non_exhaustive()
    }
}

/// Reads the last `max` complete lines of `path` without reading the whole file.
fn tail_lines(path: &Path, max: usize) -> io::Result<Vec<String>> {
    let mut f = match File::open(path) {
        Ok(f) => f,
        Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(Vec::new()),
        Err(e) => return Err(e),
    };
    let len = f.metadata()?.len();
    let mut start = len;
    let mut buf: Vec<u8> = Vec::new();
    const CHUNK: u64 = 64 * 1024;
    while start > 0 && buf.iter().filter(|&&b| b == b'\n').count() <= max {
        let from = start.saturating_sub(CHUNK);
        let mut chunk = vec![0u8; (start - from) as usize];
        f.seek(SeekFrom::Start(from))?;
        f.read_exact(&mut chunk)?;
        chunk.extend_from_slice(&buf);
        buf = chunk;
        start = from;
    }
    let text = String::from_utf8_lossy(&buf);
    let mut lines: Vec<&str> = text.split('\n').collect();
    // After the last newline: a torn write (or nothing).
    lines.pop();
    // Before the first newline: a partial line unless the file's start was reached.
    if start > 0 && !lines.is_empty() {
        lines.remove(0);
    }
    let skip = lines.len().saturating_sub(max);
    Ok(lines[skip..].iter().map(|l| (*l).to_owned()).collect())
}

impl AuditLog {
    /// A log appending to `path` (its head and last entries read from what is there).
    pub fn new(path: PathBuf) -> AuditLog {
        AuditLog::with_sync(path, Arc::new(FileSync))
    }

    /// [`AuditLog::new`], making writes durable through `sync`.
    pub fn with_sync(path: PathBuf, sync: Arc<dyn Syncer>) -> AuditLog {
        let (head, recent) = match tail_lines(&path, KEPT) {
            Ok(lines) => (
                lines
                    .last()
                    .map_or_else(|| GENESIS.to_owned(), |l| line_hash(l)),
                lines
                    .iter()
                    .filter_map(|l| serde_json::from_str(l).ok())
                    .collect(),
            ),
            Err(e) => {
                tracing::error!(error = %e, path = %path.display(), "ALARM: cannot read the audit log");
                (GENESIS.to_owned(), VecDeque::new())
            }
        };
        AuditLog {
            path,
            sync,
            writer: Mutex::new(head.clone()),
            recent: Mutex::new(recent),
            head: Mutex::new(head),
            on_head: Mutex::new(None),
        }
    }

    /// Calls `hook(old_head, new_head)` after every append (and once now with the
    /// current head twice): to publish it.
    pub fn on_head(&self, hook: HeadHook) {
        let head = self.head();
        hook(&head, &head);
        *self.on_head.lock().unwrap_or_else(|e| e.into_inner()) = Some(hook);
    }

    /// The sha256 of the last line written.
    pub fn head(&self) -> String {
        self.head.lock().unwrap_or_else(|e| e.into_inner()).clone()
    }

    /// Appends one entry at wall time `at_ms` by `who` (a tenant, or the signal or
    /// process that acted) with `credential` (see `Caller::credential`), synced
    /// before this returns. Blocking (a write and an fdatasync): call it from a
    /// blocking thread or through `spawn_blocking`, never on the async runtime. On a
    /// failure nothing is kept (the file is cut back to where it was) and the error is
    /// returned: a change whose entry could not be written must not be applied.
    #[allow(clippy::too_many_arguments)]
    pub fn append(
        &self,
        at_ms: u64,
        who: &str,
        credential: Option<&str>,
        action: &str,
        target: &str,
        old: Value,
        new: Value,
    ) -> io::Result<String> {
        let mut head = self.writer.lock().unwrap_or_else(|e| e.into_inner());
        let entry = AuditEntry {
            action: action.to_owned(),
            at_ms,
            credential: credential.map(str::to_owned),
            new,
            old,
            prev: Some(head.clone()),
            target: target.to_owned(),
            v: Some(FORMAT_VERSION),
            who: Some(who.to_owned()),
        };
        let line = serde_json::to_string(&entry).expect("an audit entry is JSON");
        tracing::info!(target: "audit", who, credential, action, target, "audit");
        let written = OpenOptions::new()
            .create(true)
            .append(true)
            .open(&self.path)
            .and_then(|mut f| {
                let len = f.metadata()?.len();
                // One write per line, then fdatasync; a failed one is cut off again.
                let r = f
                    .write_all(format!("{line}\n").as_bytes())
                    .and_then(|()| self.sync.sync_data(&f));
                if r.is_err() {
                    let _ = f.set_len(len);
                }
                r
            });
        if let Err(e) = written {
            tracing::error!(error = %e, path = %self.path.display(), "ALARM: could not write the audit log");
            return Err(e);
        }
        let old_head = std::mem::replace(&mut *head, line_hash(&line));
        *self.head.lock().unwrap_or_else(|e| e.into_inner()) = head.clone();
        {
            let mut recent = self.recent.lock().unwrap_or_else(|e| e.into_inner());
            if recent.len() == KEPT {
                recent.pop_front();
            }
            recent.push_back(entry);
        }
        if let Some(hook) = &*self.on_head.lock().unwrap_or_else(|e| e.into_inner()) {
            hook(&old_head, &head);
        }
        Ok(head.clone())
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

/// What [`verify`] found.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Verdict {
    /// The chain holds.
    Intact {
        /// Lines read.
        lines: usize,
        /// Lines before the chain (written before entries were chained).
        unchained: usize,
        /// The sha256 of the last line (compare with the published head).
        head: String,
    },
    /// The first line that breaks the chain.
    Broken {
        /// Its number (1-based).
        line: usize,
        /// Why.
        reason: String,
    },
}

/// Walks the audit log at `path`: every chained line's `prev` must be the sha256 of
/// the line before it (the first line's [`GENESIS`]), and no unchained line may follow
/// a chained one. A modified line breaks the chain at the next line (or at itself when
/// it no longer parses); a deleted line breaks it at the line after the gap.
pub fn verify(path: &Path) -> io::Result<Verdict> {
    let reader = BufReader::new(File::open(path)?);
    let mut prev = GENESIS.to_owned();
    let mut lines = 0;
    let mut unchained = 0;
    let mut chained = false;
    for (i, line) in reader.split(b'\n').enumerate() {
        let line = line?;
        let n = i + 1;
        lines = n;
        let Ok(text) = String::from_utf8(line) else {
            return Ok(Verdict::Broken {
                line: n,
                reason: "not UTF-8".into(),
            });
        };
        let entry: Value = match serde_json::from_str(&text) {
            Ok(v) => v,
            Err(e) => {
                return Ok(Verdict::Broken {
                    line: n,
                    reason: format!("not a JSON entry: {e}"),
                });
            }
        };
        match entry.get("prev").and_then(Value::as_str) {
            Some(p) if p == prev => chained = true,
            Some(p) => {
                return Ok(Verdict::Broken {
                    line: n,
                    reason: format!(
                        "prev {p} is not the hash of line {} ({prev}): the line before was changed or removed",
                        n - 1
                    ),
                });
            }
            None if chained => {
                return Ok(Verdict::Broken {
                    line: n,
                    reason: "an entry without prev after the chain began".into(),
                });
            }
            None => unchained += 1,
        }
        prev = line_hash(&text);
    }
    Ok(Verdict::Intact {
        lines,
        unchained,
        head: prev,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn append(log: &AuditLog, i: u64) {
        log.append(
            i,
            "op",
            Some("token:abcd0123"),
            "policy.rule",
            "r",
            json!(i),
            json!(i + 1),
        )
        .unwrap();
    }

    #[test]
    fn appends_to_the_file_and_keeps_the_last_entries() {
        let dir = tempfile::tempdir().unwrap();
        let log = AuditLog::new(dir.path().join("audit.jsonl"));
        for i in 0..(KEPT as u64 + 2) {
            append(&log, i);
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
            json!({"v": 2, "at_ms": 0, "who": "op", "credential": "token:abcd0123", "action": "policy.rule", "target": "r", "old": 0, "new": 1, "prev": GENESIS})
        );
        // Each entry names the hash of the line before it.
        let raw: Vec<&str> = text.lines().collect();
        assert_eq!(lines[1]["prev"], line_hash(raw[0]));
        // A new log on the same file continues the chain and shows the last entries.
        let again = AuditLog::new(dir.path().join("audit.jsonl"));
        assert_eq!(again.head(), line_hash(raw[KEPT + 1]));
        assert_eq!(again.entries().len(), KEPT);
        assert_eq!(again.entries()[KEPT - 1].new, KEPT as u64 + 2);
        append(&again, 9999);
        assert!(matches!(
            verify(&dir.path().join("audit.jsonl")).unwrap(),
            Verdict::Intact { lines, unchained: 0, .. } if lines == KEPT + 3
        ));
    }

    #[test]
    fn a_failed_write_is_an_error_and_keeps_nothing() {
        let dir = tempfile::tempdir().unwrap();
        // A directory where the file should be: every append fails.
        let log = AuditLog::new(dir.path().to_path_buf());
        assert!(
            log.append(5, "op", None, "reload", "banks", json!(null), json!(null))
                .is_err()
        );
        assert!(log.entries().is_empty());
        assert_eq!(log.head(), GENESIS);
    }

    #[test]
    fn verify_finds_the_first_broken_line() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("audit.jsonl");
        // Two lines from before the chain, then chained entries.
        std::fs::write(
            &path,
            "{\"at_ms\":1,\"who\":\"a\"}\n{\"at_ms\":2,\"who\":\"a\"}\n",
        )
        .unwrap();
        let log = AuditLog::new(path.clone());
        for i in 0..5 {
            append(&log, i);
        }
        let Verdict::Intact {
            lines,
            unchained,
            head,
        } = verify(&path).unwrap()
        else {
            panic!("intact")
        };
        assert_eq!((lines, unchained, head), (7, 2, log.head()));
        let original = std::fs::read_to_string(&path).unwrap();
        let lines: Vec<&str> = original.lines().collect();
        // Line 4 changed (its new value): the chain breaks at line 5.
        let mut changed = lines.clone();
        let edited = lines[3].replace("\"new\":2", "\"new\":7");
        assert_ne!(edited, lines[3]);
        changed[3] = &edited;
        std::fs::write(&path, changed.join("\n") + "\n").unwrap();
        assert!(matches!(
            verify(&path).unwrap(),
            Verdict::Broken { line: 5, .. }
        ));
        // Line 4 deleted: what was line 5 is now line 4 and names the deleted line.
        let mut deleted = lines.clone();
        deleted.remove(3);
        std::fs::write(&path, deleted.join("\n") + "\n").unwrap();
        assert!(matches!(
            verify(&path).unwrap(),
            Verdict::Broken { line: 4, .. }
        ));
        // An unchained line after the chain began.
        let mut inserted = lines.clone();
        inserted.insert(5, "{\"at_ms\":3}");
        std::fs::write(&path, inserted.join("\n") + "\n").unwrap();
        assert!(matches!(
            verify(&path).unwrap(),
            Verdict::Broken { line: 6, .. }
        ));
    }
}

//! Incident state on disk: `incidents.jsonl` in the data directory, so that
//! acknowledgements, resolutions and open incidents survive a restart.
//!
//! The file starts with a header line `{"format":"firebreak.incidents","version":1}`;
//! every later line is one incident as it stands after a change,
//! `{"id":…,"incident":{…}}`, appended and synced (fdatasync) before the change is
//! answered. Replaying keeps the last line of each id. At open the journal is compacted:
//! the replayed incidents are written to a new file (synced), renamed over the old one
//! (the directory synced), and appending continues there; it is compacted again when it
//! holds [`COMPACT_FACTOR`] times more lines than incidents. A torn last line (a crash
//! mid-write) is dropped; any other unreadable line, or an unknown format version, stops
//! the start rather than lose state silently.
//!
//! Blocking: every function here writes and syncs files. The engine calls them from
//! the stream threads and from `spawn_blocking`, never on the async runtime.

use std::fs::{File, OpenOptions};
use std::io::{self, BufRead, BufReader, Write};
use std::path::{Path, PathBuf};
use std::sync::Arc;

use firebreak_delivery::Syncer;
use serde::{Deserialize, Serialize};

use super::incidents::Incident;

/// The header's `format`.
pub const FORMAT: &str = "firebreak.incidents";
/// The current format version (the header's `version`).
pub const VERSION: u64 = 1;
/// The journal is compacted when it holds this many times more lines than incidents
/// (plus the store's bound).
pub const COMPACT_FACTOR: usize = 4;

#[derive(Debug, Serialize, Deserialize)]
struct Header {
    format: String,
    version: u64,
}

#[derive(Debug, Serialize, Deserialize)]
struct Line {
    id: String,
    incident: Incident,
}

/// An open journal, appending.
#[derive(Debug)]
pub(crate) struct Journal {
    path: PathBuf,
    file: File,
    /// How writes are made durable.
    sync: Arc<dyn Syncer>,
    /// Incident lines in the file (not counting the header).
    lines: usize,
    /// Bytes in the file after its last complete line.
    len: u64,
}

fn invalid(path: &Path, line: usize, what: impl std::fmt::Display) -> io::Error {
    io::Error::new(
        io::ErrorKind::InvalidData,
        format!("{} line {line}: {what}", path.display()),
    )
}

/// Reads a journal: the incidents in the order they first appear, each as its last
/// line says. A missing file is an empty journal.
pub(crate) fn replay(path: &Path) -> io::Result<Vec<(String, Incident)>> {
    let file = match File::open(path) {
        Ok(f) => f,
        Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(Vec::new()),
        Err(e) => return Err(e),
    };
    let mut order: Vec<String> = Vec::new();
    let mut last: std::collections::HashMap<String, Incident> = Default::default();
    let mut reader = BufReader::new(file);
    let mut buf = String::new();
    let mut n = 0;
    loop {
        buf.clear();
        if reader.read_line(&mut buf)? == 0 {
            break;
        }
        n += 1;
        let complete = buf.ends_with('\n');
        let text = buf.trim_end_matches('\n');
        if n == 1 {
            let header: Header = match serde_json::from_str(text) {
                Ok(h) => h,
                Err(_) if !complete => break,
                Err(e) => return Err(invalid(path, n, format!("not a journal header: {e}"))),
            };
            if header.format != FORMAT || header.version != VERSION {
                return Err(invalid(
                    path,
                    n,
                    format!(
                        "format {:?} version {}, this build reads {FORMAT:?} version {VERSION}",
                        header.format, header.version
                    ),
                ));
            }
            continue;
        }
        let line: Line = match serde_json::from_str(text) {
            Ok(l) => l,
            // A torn last line: the crash came mid-write, before the change was answered.
            Err(_) if !complete => break,
            Err(e) => return Err(invalid(path, n, e)),
        };
        if last.insert(line.id.clone(), line.incident).is_none() {
            order.push(line.id);
        }
    }
    Ok(order
        .into_iter()
        .filter_map(|id| last.remove(&id).map(|e| (id, e)))
        .collect())
}

/// Writes `bytes` to `path` atomically: a synced temporary file renamed over it, then
/// the directory synced.
pub(crate) fn write_atomic(path: &Path, bytes: &[u8]) -> io::Result<()> {
    write_atomic_with(path, bytes, &firebreak_delivery::FileSync)
}

/// [`write_atomic`], syncing through `sync`.
fn write_atomic_with(path: &Path, bytes: &[u8], sync: &dyn Syncer) -> io::Result<()> {
    let dir = path.parent().unwrap_or(Path::new("."));
    let tmp = path.with_extension("tmp");
    {
        let mut f = File::create(&tmp)?;
        f.write_all(bytes)?;
        sync.sync_all(&f)?;
    }
    std::fs::rename(&tmp, path)?;
    sync.sync_all(&File::open(dir)?)
}

impl Journal {
    /// Writes a compacted journal holding `incidents` at `path` (replacing what is
    /// there) and opens it for appending.
    pub(crate) fn create(
        path: &Path,
        incidents: &[(String, Incident)],
        sync: Arc<dyn Syncer>,
    ) -> io::Result<Journal> {
        let mut text = serde_json::to_string(&Header {
            format: FORMAT.into(),
            version: VERSION,
        })?;
        text.push('\n');
        for (id, incident) in incidents {
            text.push_str(&serde_json::to_string(&LineRef { id, incident })?);
            text.push('\n');
        }
        write_atomic_with(path, text.as_bytes(), &*sync)?;
        let file = OpenOptions::new().append(true).open(path)?;
        Ok(Journal {
            path: path.to_owned(),
            file,
            sync,
            lines: incidents.len(),
            len: text.len() as u64,
        })
    }

    /// Appends incident `id` as it stands, synced before this returns. Returns whether
    /// the journal is due for compaction (`kept` incidents are in the store).
    pub(crate) fn append(
        &mut self,
        id: &str,
        incident: &Incident,
        kept: usize,
    ) -> io::Result<bool> {
        let mut line = serde_json::to_string(&LineRef { id, incident })?;
        line.push('\n');
        // One write per line, then fdatasync. A failed write is cut off again, so the
        // next line does not continue a torn one.
        if let Err(e) = self
            .file
            .write_all(line.as_bytes())
            .and_then(|()| self.sync.sync_data(&self.file))
        {
            let _ = self.file.set_len(self.len);
            return Err(e);
        }
        self.lines += 1;
        self.len += line.len() as u64;
        Ok(self.lines > COMPACT_FACTOR * (kept + crate::engine::incidents::KEPT))
    }

    /// Rewrites the journal as `incidents` (compaction).
    pub(crate) fn compact(&mut self, incidents: &[(String, Incident)]) -> io::Result<()> {
        *self = Journal::create(&self.path, incidents, self.sync.clone())?;
        Ok(())
    }
}

#[derive(Serialize)]
struct LineRef<'a> {
    id: &'a str,
    incident: &'a Incident,
}

#[cfg(test)]
mod tests {
    use firebreak_policy::policy::{Decision, DecisionKind};

    use super::*;
    use crate::engine::incidents::{Action, IncidentStore, Mark};

    fn store() -> IncidentStore {
        let mut s = IncidentStore::new();
        for id in ["a", "b"] {
            s.record(
                &Decision {
                    id: format!("{id}-0"),
                    stream_id: "s".into(),
                    incident_id: id.into(),
                    sequence: 0,
                    kind: DecisionKind::Escalated,
                    tier: "crisis".into(),
                    previous_tier: "none".into(),
                    wall_ms: 10,
                    media_start: 1.0,
                    media_end: 2.0,
                    policy_version: "v".into(),
                    rules: vec!["r".into()],
                    evidence: Vec::new(),
                    activation: None,
                },
                4,
                "t",
            );
        }
        s
    }

    #[test]
    fn the_last_line_of_each_incident_wins_and_a_torn_tail_is_dropped() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("incidents.jsonl");
        let mut s = store();
        let mut j =
            Journal::create(&path, &s.export(), Arc::new(firebreak_delivery::FileSync)).unwrap();
        let mark = Mark {
            by: "op".into(),
            at_ms: 20,
            note: "n".into(),
        };
        s.act("a", Action::Acknowledge, mark.clone(), None).unwrap();
        j.append("a", s.incident("a").unwrap(), 2).unwrap();
        s.act("a", Action::Resolve, mark, None).unwrap();
        j.append("a", s.incident("a").unwrap(), 2).unwrap();
        // A crash in the middle of a write.
        std::fs::OpenOptions::new()
            .append(true)
            .open(&path)
            .unwrap()
            .write_all(b"{\"id\":\"b\",\"incid")
            .unwrap();
        let replayed = replay(&path).unwrap();
        assert_eq!(replayed, s.export());
        assert_eq!(
            IncidentStore::restored(replayed, crate::engine::incidents::KEPT)
                .get("a")
                .unwrap()
                .state,
            "resolved"
        );
    }

    #[test]
    fn another_format_version_is_refused() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("incidents.jsonl");
        std::fs::write(
            &path,
            "{\"format\":\"firebreak.incidents\",\"version\":2}\n",
        )
        .unwrap();
        let err = replay(&path).unwrap_err();
        assert!(err.to_string().contains("version 2"), "{err}");
        // A damaged line that is not the last one is corruption, not a torn write.
        let mut j = Journal::create(
            &path,
            &store().export(),
            Arc::new(firebreak_delivery::FileSync),
        )
        .unwrap();
        j.append("a", store().incident("a").unwrap(), 2).unwrap();
        let text = std::fs::read_to_string(&path)
            .unwrap()
            .replacen("\"b\"", "\"b", 1);
        std::fs::write(&path, text).unwrap();
        assert!(replay(&path).unwrap_err().to_string().contains("line 3"));
    }
}

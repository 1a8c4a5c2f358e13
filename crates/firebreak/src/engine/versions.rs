//! Policy versions on disk: every policy the engine ran, numbered 1, 2, 3, … in
//! `policy-versions/NNNNNN.json` in the data directory, each written atomically (a
//! synced temporary file renamed, the directory synced).
//!
//! Each version records where it came from (`source`: `file` for the policy file at a
//! start or reload, else the API action: `policy.update`, `policy.rule`,
//! `policy.rollback`) and `file_sha256`, the sha256 of the policy file's policy
//! (canonical TOML) it was made over. The rule at start and on reload (SIGHUP,
//! `POST /v1/reload`): **the latest version wins unless the policy file changed since
//! it was made** (its canonical sha256 differs from the latest version's
//! `file_sha256`); a changed file wins and becomes a new version. Comments and
//! formatting in the file are not changes. Rolling back to version N makes a new
//! version with N's policy (`rolled_back_from: N`).
//!
//! Blocking: file I/O; called from `spawn_blocking` and at start.

use std::io;
use std::path::{Path, PathBuf};

use firebreak_policy::config::PolicyConfig;
use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};

use super::journal::write_atomic;

/// The `format` field of each version file.
pub const FORMAT: &str = "firebreak.policy-version";
/// The current format version.
pub const VERSION: u64 = 1;

/// One stored policy version.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct StoredPolicy {
    /// [`FORMAT`].
    pub format: String,
    /// [`VERSION`].
    pub format_version: u64,
    /// Its number (1, 2, …).
    pub number: u64,
    /// When it was made (wall ms).
    pub at_ms: u64,
    /// Who made it (tenant, or `startup` / the reload's caller).
    pub who: String,
    /// `file`, or the API action that made it.
    pub source: String,
    /// The policy's effective version string.
    pub policy_version: String,
    /// The policy file's canonical sha256 this version was made over.
    pub file_sha256: String,
    /// For a rollback: the version rolled back to.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub rolled_back_from: Option<u64>,
    /// The dry-run this version was applied on (`POST /v1/policy/dry-run`, then the
    /// change with `?dry_run=ID`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub dry_run: Option<DryRunRecord>,
    /// The policy (TOML).
    pub toml: String,
}

/// What a policy version records of the dry-run it was applied on.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
pub struct DryRunRecord {
    /// The dry-run's id.
    pub id: String,
    /// The canonical sha256 of the policy it proposed ([`policy_sha256`]).
    pub proposed_sha256: String,
    /// The active policy's version then.
    pub active_version: String,
    /// The window replayed, Unix ms (from inclusive, to exclusive).
    pub from_ms: u64,
    /// End of the window.
    pub to_ms: u64,
    /// Escalations it would add, and remove, over the window.
    pub added: u64,
    /// See `added`.
    pub removed: u64,
}

/// Dry-runs remembered for changes applied on them.
pub const DRY_RUNS_KEPT: usize = 64;

/// The latest [`DRY_RUNS_KEPT`] dry-runs, for a change applied with `?dry_run=ID`
/// (the engine's, and the coordinator's in fleet mode).
#[derive(Debug, Default)]
pub struct DryRuns(std::sync::Mutex<std::collections::VecDeque<DryRunRecord>>);

impl DryRuns {
    /// Remembers a dry-run (the oldest goes beyond [`DRY_RUNS_KEPT`]).
    pub fn remember(&self, record: DryRunRecord) {
        let mut runs = self.0.lock().unwrap_or_else(|e| e.into_inner());
        runs.retain(|r| r.id != record.id);
        runs.push_back(record);
        while runs.len() > DRY_RUNS_KEPT {
            runs.pop_front();
        }
    }

    /// The record of dry-run `id` for applying `config`: refused (the reason) when
    /// the id is unknown or the dry-run replayed another policy.
    pub fn check(&self, id: &str, config: &PolicyConfig) -> Result<DryRunRecord, String> {
        let runs = self.0.lock().unwrap_or_else(|e| e.into_inner());
        let Some(r) = runs.iter().find(|r| r.id == id) else {
            return Err(format!(
                "no dry-run {id:?} (unknown, or too old: run it again)"
            ));
        };
        if r.proposed_sha256 != policy_sha256(config) {
            return Err(format!(
                "dry-run {id:?} replayed another policy than this one"
            ));
        }
        Ok(r.clone())
    }
}

/// The canonical sha256 of a policy (hex): its TOML as this build writes it.
pub fn policy_sha256(config: &PolicyConfig) -> String {
    let text = toml::to_string(config).unwrap_or_default();
    hex(&Sha256::digest(text.as_bytes()))
}

pub(crate) fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

/// The versions directory.
#[derive(Debug)]
pub struct PolicyVersions {
    dir: PathBuf,
    latest: Option<StoredPolicy>,
}

impl PolicyVersions {
    /// Opens (creating) `dir` and reads its latest version.
    pub fn open(dir: &Path) -> io::Result<PolicyVersions> {
        std::fs::create_dir_all(dir)?;
        let mut v = PolicyVersions {
            dir: dir.to_owned(),
            latest: None,
        };
        if let Some(&n) = v.numbers()?.last() {
            v.latest = Some(v.get(n)?.ok_or_else(|| {
                io::Error::new(io::ErrorKind::NotFound, format!("policy version {n}"))
            })?);
        }
        Ok(v)
    }

    fn path(&self, n: u64) -> PathBuf {
        self.dir.join(format!("{n:06}.json"))
    }

    /// The numbers stored, ascending.
    pub fn numbers(&self) -> io::Result<Vec<u64>> {
        let mut out = Vec::new();
        for entry in std::fs::read_dir(&self.dir)? {
            let name = entry?.file_name();
            let name = name.to_string_lossy();
            if let Some(n) = name.strip_suffix(".json").and_then(|s| s.parse().ok()) {
                out.push(n);
            }
        }
        out.sort_unstable();
        Ok(out)
    }

    /// The latest version.
    pub fn latest(&self) -> Option<&StoredPolicy> {
        self.latest.as_ref()
    }

    /// Version `n`, if stored.
    pub fn get(&self, n: u64) -> io::Result<Option<StoredPolicy>> {
        let text = match std::fs::read_to_string(self.path(n)) {
            Ok(t) => t,
            Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(None),
            Err(e) => return Err(e),
        };
        let v: StoredPolicy = serde_json::from_str(&text).map_err(|e| {
            io::Error::new(
                io::ErrorKind::InvalidData,
                format!("{}: {e}", self.path(n).display()),
            )
        })?;
        if v.format != FORMAT || v.format_version != VERSION {
            return Err(io::Error::new(
                io::ErrorKind::InvalidData,
                format!(
                    "{}: format {:?} version {}, this build reads {FORMAT:?} version {VERSION}",
                    self.path(n).display(),
                    v.format,
                    v.format_version
                ),
            ));
        }
        Ok(Some(v))
    }

    /// Stores the next version (its number filled in) and returns its number.
    pub fn save(&mut self, mut v: StoredPolicy) -> io::Result<u64> {
        v.number = self.latest.as_ref().map_or(1, |l| l.number + 1);
        v.format = FORMAT.into();
        v.format_version = VERSION;
        let text = serde_json::to_vec_pretty(&v)?;
        write_atomic(&self.path(v.number), &text)?;
        let n = v.number;
        self.latest = Some(v);
        Ok(n)
    }
}

//! Banks on disk: one binary snapshot per bank, `<dir>/<name>.fbank`.
//!
//! A save writes a temporary file, syncs it, renames it over the old snapshot and syncs
//! the directory, so a crash mid-import leaves the previous bank intact. Loading every
//! bank skips (and returns) the ones that cannot be read, so one corrupt file does not
//! take matching down.
//!
//! Beside the banks, `matcher.fmatch` holds the matcher built from all of them, index
//! included (see [`BankStore::load_matcher`]): a process starting over unchanged banks
//! maps or reads it instead of parsing every bank and rebuilding the index, which took
//! about 25 s at ten million entries.

use std::fs::File;
use std::io::{BufReader, BufWriter};
use std::path::{Path, PathBuf};
use std::time::Instant;

use crate::bank::{Bank, SnapshotError};
use crate::mapfile::{self, LoadMode};
use crate::matcher::{MatchConfig, Matcher};

/// The extension of a bank snapshot.
pub const EXTENSION: &str = "fbank";

/// Why a bank could not be read or written.
#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    /// The bank name is not allowed (it becomes a file name).
    #[error("bank name {0:?} must be 1-64 characters of A-Z, a-z, 0-9, '-' and '_'")]
    Name(String),
    /// A file or directory operation failed.
    #[error("{path}: {source}")]
    Io {
        /// The file or directory.
        path: PathBuf,
        /// What failed.
        source: std::io::Error,
    },
    /// A snapshot is corrupt or of another version.
    #[error("{path}: {source}")]
    Snapshot {
        /// The snapshot file.
        path: PathBuf,
        /// What is wrong with it.
        source: SnapshotError,
    },
}

impl StoreError {
    fn io(path: &Path) -> impl FnOnce(std::io::Error) -> StoreError + '_ {
        move |source| StoreError::Io {
            path: path.to_path_buf(),
            source,
        }
    }
}

/// A bank read from its snapshot, with the figures `firebreak lists stats` reports.
#[derive(Debug)]
pub struct LoadedBank {
    /// The bank.
    pub bank: Bank,
    /// The snapshot's size in bytes.
    pub bytes: u64,
    /// How long reading it took, in milliseconds.
    pub load_ms: f64,
}

/// Every bank in a directory.
#[derive(Debug)]
pub struct BankSet {
    /// The banks that loaded, sorted by file name.
    pub banks: Vec<LoadedBank>,
    /// The snapshots that could not be read (skipped).
    pub skipped: Vec<StoreError>,
}

/// The banks directory.
#[derive(Debug, Clone)]
pub struct BankStore {
    dir: PathBuf,
}

impl BankStore {
    /// The store in `dir` (created by the first save).
    pub fn new(dir: impl Into<PathBuf>) -> BankStore {
        BankStore { dir: dir.into() }
    }

    /// The directory.
    pub fn dir(&self) -> &Path {
        &self.dir
    }

    /// Checks that `name` can name a bank: 1-64 characters of `A-Z a-z 0-9 - _`.
    pub fn check_name(name: &str) -> Result<(), StoreError> {
        let ok = !name.is_empty()
            && name.len() <= 64
            && name
                .bytes()
                .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_');
        if ok {
            Ok(())
        } else {
            Err(StoreError::Name(name.to_owned()))
        }
    }

    /// The snapshot path of bank `name` (whether or not it exists).
    pub fn path(&self, name: &str) -> Result<PathBuf, StoreError> {
        Self::check_name(name)?;
        Ok(self.dir.join(format!("{name}.{EXTENSION}")))
    }

    /// Reads bank `name`; `Ok(None)` when it does not exist.
    pub fn load(&self, name: &str) -> Result<Option<Bank>, StoreError> {
        let path = self.path(name)?;
        match File::open(&path) {
            Ok(file) => read(&path, file).map(Some),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(None),
            Err(e) => Err(StoreError::io(&path)(e)),
        }
    }

    /// Writes `bank` atomically and durably (see the module doc).
    pub fn save(&self, bank: &Bank) -> Result<(), StoreError> {
        let path = self.path(&bank.name)?;
        std::fs::create_dir_all(&self.dir).map_err(StoreError::io(&self.dir))?;
        let tmp = path.with_extension(format!("{EXTENSION}.tmp"));
        let file = File::create(&tmp).map_err(StoreError::io(&tmp))?;
        let mut w = BufWriter::new(file);
        bank.write_snapshot(&mut w).map_err(StoreError::io(&tmp))?;
        let file = w
            .into_inner()
            .map_err(|e| StoreError::io(&tmp)(e.into_error()))?;
        file.sync_all().map_err(StoreError::io(&tmp))?;
        std::fs::rename(&tmp, &path).map_err(StoreError::io(&path))?;
        // Make the rename itself durable.
        File::open(&self.dir)
            .and_then(|d| d.sync_all())
            .map_err(StoreError::io(&self.dir))
    }

    /// Every bank in the directory (none when it does not exist). Unreadable snapshots
    /// are skipped and returned in [`BankSet::skipped`]; only an unreadable directory
    /// is an error.
    pub fn load_all(&self) -> Result<BankSet, StoreError> {
        let mut set = BankSet {
            banks: Vec::new(),
            skipped: Vec::new(),
        };
        for path in self.bank_paths()? {
            let started = Instant::now();
            let loaded = File::open(&path)
                .map_err(StoreError::io(&path))
                .and_then(|f| read(&path, f));
            match loaded {
                Ok(bank) => {
                    let bytes = std::fs::metadata(&path).map_or(0, |m| m.len());
                    set.banks.push(LoadedBank {
                        bank,
                        bytes,
                        load_ms: started.elapsed().as_secs_f64() * 1000.0,
                    });
                }
                Err(e) => set.skipped.push(e),
            }
        }
        Ok(set)
    }
}

/// The matcher snapshot's file name in the banks directory.
pub const MATCHER_SNAPSHOT: &str = "matcher.fmatch";

/// A bank as a loaded matcher holds it.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct BankSummary {
    /// Bank name.
    pub name: String,
    /// Entries.
    pub entries: usize,
    /// Whether it is a negative bank.
    pub negative: bool,
}

impl BankSummary {
    /// The summary of `bank` as it is now.
    pub fn of(bank: &Bank) -> BankSummary {
        BankSummary {
            name: bank.name.clone(),
            entries: bank.len(),
            negative: bank.negative,
        }
    }
}

/// How [`BankStore::load_matcher`] loads.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct MatcherOptions {
    /// Thresholds.
    pub config: MatchConfig,
    /// Threads for index builds and checks.
    pub threads: usize,
    /// How the snapshot is brought into memory; `None`: never use or write one.
    pub snapshot: Option<LoadMode>,
    /// Whether to write a snapshot after building the matcher from the banks.
    pub save: bool,
}

/// Where a loaded matcher came from.
#[derive(Debug)]
pub enum MatcherSource {
    /// The snapshot, current for the banks and the thresholds.
    Snapshot,
    /// Built from the banks.
    Built {
        /// Why the snapshot was not used (`None`: snapshots are off, or there are no
        /// banks).
        why: Option<String>,
        /// Whether a snapshot was written for the next start (`None`: not attempted).
        saved: Option<Result<(), String>>,
    },
}

/// A matcher loaded from the banks directory.
#[derive(Debug)]
pub struct LoadedMatcher {
    /// The matcher.
    pub matcher: Matcher,
    /// The banks it holds, sorted by name.
    pub banks: Vec<BankSummary>,
    /// The bank snapshots that could not be read (skipped).
    pub skipped: Vec<StoreError>,
    /// Where it came from.
    pub source: MatcherSource,
}

/// What a matcher snapshot's key holds: what it was made from, and what it holds.
#[derive(Debug, serde::Serialize, serde::Deserialize)]
struct SnapshotKey {
    /// Every bank file (name, length, checksum) and the vPDQ quality filter: a
    /// snapshot is current while these are unchanged.
    fingerprint: String,
    banks: Vec<BankSummary>,
}

impl BankStore {
    /// The matcher snapshot's path.
    pub fn matcher_path(&self) -> PathBuf {
        self.dir.join(MATCHER_SNAPSHOT)
    }

    /// The bank files, sorted.
    fn bank_paths(&self) -> Result<Vec<PathBuf>, StoreError> {
        let entries = match std::fs::read_dir(&self.dir) {
            Ok(e) => e,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(Vec::new()),
            Err(e) => return Err(StoreError::io(&self.dir)(e)),
        };
        let mut paths: Vec<PathBuf> = entries
            .filter_map(|e| e.ok().map(|e| e.path()))
            .filter(|p| p.extension().is_some_and(|x| x == EXTENSION))
            .collect();
        paths.sort();
        Ok(paths)
    }

    /// What the banks and the stored structures' parameters are now: each bank file's
    /// name, length and stored checksum (its last four bytes), read without reading
    /// the banks.
    fn fingerprint(&self, config: &MatchConfig) -> Result<String, StoreError> {
        use std::io::{Read, Seek, SeekFrom};
        // Distances are applied per query; only the vPDQ quality filter shapes what
        // is stored.
        let mut out = format!("matcher 1; vpdq quality {}", config.vpdq_quality);
        for path in self.bank_paths()? {
            let stored = (|| {
                let mut file = File::open(&path)?;
                let len = file.metadata()?.len();
                let mut crc = [0u8; 4];
                if len >= 4 {
                    file.seek(SeekFrom::End(-4))?;
                    file.read_exact(&mut crc)?;
                }
                std::io::Result::Ok(format!("{len} {:08x}", u32::from_le_bytes(crc)))
            })();
            // An unreadable bank is skipped by the load, as it always was, and no
            // snapshot is written while one is: it must not fail the whole load here.
            let stored = stored.unwrap_or_else(|e| format!("unreadable ({e})"));
            let name = path.file_name().unwrap_or_default().to_string_lossy();
            out.push_str(&format!("; {name} {stored}"));
        }
        Ok(out)
    }

    /// The snapshot, if it is current for `fingerprint`.
    fn current_snapshot(
        &self,
        fingerprint: &str,
        config: MatchConfig,
        mode: LoadMode,
        threads: usize,
    ) -> Result<(Matcher, Vec<BankSummary>), String> {
        let path = self.matcher_path();
        let key = match mapfile::read_key(&path) {
            Ok(k) => k,
            Err(mapfile::FileError::Io(e)) if e.kind() == std::io::ErrorKind::NotFound => {
                return Err("no snapshot".into());
            }
            Err(e) => return Err(format!("{}: {e}", path.display())),
        };
        let key: SnapshotKey = serde_json::from_slice(&key)
            .map_err(|e| format!("{}: unreadable key: {e}", path.display()))?;
        if key.fingerprint != fingerprint {
            return Err("stale: the banks changed since it was written".into());
        }
        let loaded = mapfile::load(&path, mode).map_err(|e| format!("{}: {e}", path.display()))?;
        // The key was read before the checksum was checked: compare the checked one.
        let checked: SnapshotKey = serde_json::from_slice(loaded.key())
            .map_err(|e| format!("{}: unreadable key: {e}", path.display()))?;
        if checked.fingerprint != fingerprint {
            return Err("stale: replaced while it was loaded".into());
        }
        let matcher = Matcher::read_snapshot(&loaded, config, threads)
            .map_err(|e| format!("{}: {e}", path.display()))?;
        Ok((matcher, checked.banks))
    }

    /// Writes `matcher` as the snapshot of the bank files as they are now, holding
    /// `banks`. The caller vouches that the matcher holds exactly what those files do
    /// (it was built from them, or every change saved to them was applied to it).
    pub fn save_matcher(&self, matcher: &Matcher, banks: &[BankSummary]) -> Result<(), StoreError> {
        let fingerprint = self.fingerprint(&matcher.config())?;
        self.write_matcher(matcher, fingerprint, banks)
            .map_err(|e| StoreError::Io {
                path: self.matcher_path(),
                source: std::io::Error::other(e),
            })
    }

    fn write_matcher(
        &self,
        matcher: &Matcher,
        fingerprint: String,
        banks: &[BankSummary],
    ) -> Result<(), String> {
        let key = SnapshotKey {
            fingerprint,
            banks: banks.to_vec(),
        };
        let key = serde_json::to_vec(&key).expect("a key serialises");
        std::fs::create_dir_all(&self.dir)
            .and_then(|()| matcher.write_snapshot(&self.matcher_path(), &key))
            .map_err(|e| format!("{}: {e}", self.matcher_path().display()))
    }

    /// The matcher over every bank in the directory.
    ///
    /// With snapshots on, a snapshot written for the same bank files (and vPDQ quality) is
    /// loaded instead of the banks (checked in full first: a damaged, truncated or stale
    /// snapshot is never used, and the banks are read instead). Otherwise the matcher is
    /// built from the banks and, with `save`, written as the snapshot for the next start
    /// (unless a bank was unreadable, so that the error shows at every start).
    pub fn load_matcher(&self, options: MatcherOptions) -> Result<LoadedMatcher, StoreError> {
        let MatcherOptions {
            config,
            threads,
            snapshot,
            save,
        } = options;
        let before = match snapshot {
            Some(_) => Some(self.fingerprint(&config)?),
            None => None,
        };
        let mut why = None;
        if let (Some(mode), Some(fingerprint)) = (snapshot, &before) {
            match self.current_snapshot(fingerprint, config, mode, threads) {
                Ok((matcher, banks)) => {
                    return Ok(LoadedMatcher {
                        matcher,
                        banks,
                        skipped: Vec::new(),
                        source: MatcherSource::Snapshot,
                    });
                }
                Err(e) => why = Some(e),
            }
        }
        let set = self.load_all()?;
        let matcher = Matcher::new(set.banks.iter().map(|b| &b.bank), config, threads);
        let banks: Vec<BankSummary> = set.banks.iter().map(|b| BankSummary::of(&b.bank)).collect();
        drop(set.banks);
        let mut saved = None;
        if let (true, Some(fingerprint)) = (save && set.skipped.is_empty(), before) {
            // Banks saved meanwhile would make the snapshot claim files it does not hold.
            let after = self.fingerprint(&config)?;
            saved = Some(if after != fingerprint {
                Err("the banks changed while they were loaded".to_owned())
            } else {
                self.write_matcher(&matcher, fingerprint, &banks)
            });
        }
        Ok(LoadedMatcher {
            matcher,
            banks,
            skipped: set.skipped,
            source: MatcherSource::Built { why, saved },
        })
    }
}

fn read(path: &Path, file: File) -> Result<Bank, StoreError> {
    Bank::read_snapshot(&mut BufReader::new(file)).map_err(|source| StoreError::Snapshot {
        path: path.to_path_buf(),
        source,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::lists::{Record, Signal};

    #[test]
    fn names_are_checked() {
        for bad in ["", "a/b", "..", "x y", &"a".repeat(65)] {
            assert!(
                matches!(BankStore::check_name(bad), Err(StoreError::Name(_))),
                "{bad:?}"
            );
        }
        for good in ["crisis", "a-b_C9", &"a".repeat(64)] {
            BankStore::check_name(good).unwrap();
        }
    }

    #[test]
    fn save_load_and_skip_a_corrupt_snapshot() {
        let dir = tempfile::tempdir().unwrap();
        let store = BankStore::new(dir.path().join("banks"));
        assert!(store.load_all().unwrap().banks.is_empty());
        assert!(store.load("crisis").unwrap().is_none());

        let mut bank = Bank::new("crisis", false);
        let hash = "f".repeat(64).parse().unwrap();
        let report = bank.import(
            vec![Record {
                line: 1,
                id: Some("e1".into()),
                signal: Signal::Pdq {
                    hash,
                    quality: Some(100),
                },
                labels: vec![],
                delete: false,
            }],
            vec![],
            crate::bank::ImportPolicy::default(),
        );
        assert_eq!(report.added, 1);
        store.save(&bank).unwrap();
        assert_eq!(store.load("crisis").unwrap().unwrap().len(), 1);

        std::fs::write(store.dir().join("broken.fbank"), b"not a snapshot").unwrap();
        let set = store.load_all().unwrap();
        assert_eq!(set.banks.len(), 1);
        assert_eq!(set.banks[0].bank.name, "crisis");
        assert_eq!(set.skipped.len(), 1);
        assert!(matches!(set.skipped[0], StoreError::Snapshot { .. }));
        // No temporary file is left behind.
        let names: Vec<String> = std::fs::read_dir(store.dir())
            .unwrap()
            .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
            .collect();
        assert!(!names.iter().any(|n| n.ends_with(".tmp")), "{names:?}");
    }
}

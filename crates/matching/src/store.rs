//! Banks on disk: one binary snapshot per bank, `<dir>/<name>.fbank`.
//!
//! A save writes a temporary file, syncs it, renames it over the old snapshot and syncs
//! the directory, so a crash mid-import leaves the previous bank intact. Loading every
//! bank skips (and returns) the ones that cannot be read, so one corrupt file does not
//! take matching down.

use std::fs::File;
use std::io::{BufReader, BufWriter};
use std::path::{Path, PathBuf};
use std::time::Instant;

use crate::bank::{Bank, SnapshotError};

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
        let entries = match std::fs::read_dir(&self.dir) {
            Ok(e) => e,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(set),
            Err(e) => return Err(StoreError::io(&self.dir)(e)),
        };
        let mut paths: Vec<PathBuf> = entries
            .filter_map(|e| e.ok().map(|e| e.path()))
            .filter(|p| p.extension().is_some_and(|x| x == EXTENSION))
            .collect();
        paths.sort();
        for path in paths {
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

//! An updatable index: an immutable [`MihIndex`] base plus a small delta and a set of
//! deleted keys, published together as one snapshot behind an atomic pointer.
//!
//! Readers load the current snapshot (a reference-count increment, no lock) and query
//! it; a writer builds the next snapshot beside it and swaps it in. A hash added with
//! [`LiveIndex::add`] is matchable as soon as `add` returns. When the delta grows past
//! a size where scanning it costs more than the base query, [`LiveIndex::compact`]
//! merges it into a new base; the merge runs outside the writer lock, so neither
//! readers nor writers wait for a rebuild.

use std::collections::HashSet;
use std::sync::{Arc, Mutex};

use arc_swap::ArcSwap;

use super::mih::{Hit, MihIndex};
use crate::mapfile::{FileError, Reader, Store, Writer};
use firebreak_hashing::Hash256;

/// One consistent view of the index.
#[derive(Debug, Default)]
pub struct Snapshot {
    base: Arc<MihIndex>,
    delta: Arc<Vec<(Hash256, u64)>>,
    deleted: Arc<HashSet<u64>>,
}

impl Snapshot {
    /// Every live entry within `max_distance` of `query`: base hits first (slot order),
    /// then delta hits (insertion order).
    pub fn query(&self, query: &Hash256, max_distance: u32) -> Vec<Hit> {
        let mut slots = Vec::new();
        self.base.query_slots(query, max_distance, &mut slots);
        let mut hits: Vec<Hit> = slots
            .into_iter()
            .map(|(slot, distance)| Hit {
                key: self.base.key(slot),
                distance,
            })
            .filter(|h| !self.deleted.contains(&h.key))
            .collect();
        for (hash, key) in self.delta.iter() {
            let distance = hash.distance(query);
            if distance <= max_distance && !self.deleted.contains(key) {
                hits.push(Hit {
                    key: *key,
                    distance,
                });
            }
        }
        hits
    }

    /// Number of live entries.
    pub fn len(&self) -> usize {
        (self.base.len() + self.delta.len()).saturating_sub(self.deleted.len())
    }

    /// Whether there are no live entries.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// Entries in the delta (added since the last compaction).
    pub fn delta_len(&self) -> usize {
        self.delta.len()
    }

    /// The base index.
    pub fn base(&self) -> &MihIndex {
        &self.base
    }

    /// Writes the snapshot (base, delta and deletions) to a snapshot body.
    pub(crate) fn write_to<W: std::io::Write>(&self, w: &mut Writer<W>) -> std::io::Result<()> {
        self.base.write_to(w)?;
        w.u64(self.delta.len() as u64)?;
        for (hash, key) in self.delta.iter() {
            for limb in hash.limbs() {
                w.u64(limb)?;
            }
            w.u64(*key)?;
        }
        let mut deleted: Vec<u64> = self.deleted.iter().copied().collect();
        deleted.sort_unstable();
        w.array(&deleted)
    }

    /// Reads a snapshot written by [`Snapshot::write_to`] (see [`MihIndex::read_from`]).
    pub(crate) fn read_from(r: &mut Reader, threads: usize) -> Result<Snapshot, FileError> {
        let base = MihIndex::read_from(r, threads)?;
        let n = r.count(1 << 32)?;
        let mut delta = Vec::new();
        for _ in 0..n {
            let limbs = [r.u64()?, r.u64()?, r.u64()?, r.u64()?];
            delta.push((Hash256::from_limbs(limbs), r.u64()?));
        }
        let deleted: Store<u64> = r.array()?;
        Ok(Snapshot {
            base: Arc::new(base),
            delta: Arc::new(delta),
            deleted: Arc::new(deleted.iter().copied().collect()),
        })
    }

    /// Every key the snapshot holds, deleted or not (base, then delta).
    pub(crate) fn all_keys(&self) -> impl Iterator<Item = u64> + '_ {
        self.base.keys().chain(self.delta.iter().map(|(_, k)| *k))
    }

    /// The largest key the snapshot holds, deleted or not (`None`: none).
    pub(crate) fn max_key(&self) -> Option<u64> {
        let delta = self.delta.iter().map(|(_, k)| *k).max();
        self.base.max_key().max(delta)
    }
}

/// An exact Hamming-range index that accepts additions and deletions while queried.
///
/// Keys identify entries for deletion. They must be unique among live entries and must
/// not be reused after deletion (a deleted key stays a tombstone until compaction).
#[derive(Debug)]
pub struct LiveIndex {
    current: ArcSwap<Snapshot>,
    writer: Mutex<()>,
    compacting: Mutex<()>,
    threads: usize,
}

impl Default for LiveIndex {
    fn default() -> Self {
        Self::new(Vec::new(), 1)
    }
}

impl LiveIndex {
    /// Builds an index from `(hash, key)` pairs, using up to `threads` threads.
    pub fn new(entries: Vec<(Hash256, u64)>, threads: usize) -> Self {
        let (hashes, keys) = entries.into_iter().unzip();
        let base = MihIndex::build(hashes, keys, threads);
        LiveIndex {
            current: ArcSwap::from_pointee(Snapshot {
                base: Arc::new(base),
                ..Snapshot::default()
            }),
            writer: Mutex::new(()),
            compacting: Mutex::new(()),
            threads,
        }
    }

    /// An index that starts from `snapshot` (read from a file), compacting on up to
    /// `threads` threads.
    pub(crate) fn from_snapshot(snapshot: Snapshot, threads: usize) -> Self {
        LiveIndex {
            current: ArcSwap::from_pointee(snapshot),
            writer: Mutex::new(()),
            compacting: Mutex::new(()),
            threads,
        }
    }

    /// The current snapshot. Hold it for a consistent series of queries.
    pub fn snapshot(&self) -> Arc<Snapshot> {
        self.current.load_full()
    }

    /// Every live entry within `max_distance` of `query`.
    pub fn query(&self, query: &Hash256, max_distance: u32) -> Vec<Hit> {
        self.current.load().query(query, max_distance)
    }

    /// Number of live entries.
    pub fn len(&self) -> usize {
        self.current.load().len()
    }

    /// Whether there are no live entries.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// Adds entries; they are matchable when this returns.
    pub fn add(&self, entries: &[(Hash256, u64)]) {
        if entries.is_empty() {
            return;
        }
        let _writer = self.writer.lock().unwrap_or_else(|e| e.into_inner());
        let cur = self.current.load_full();
        let mut delta = Vec::with_capacity(cur.delta.len() + entries.len());
        delta.extend_from_slice(&cur.delta);
        delta.extend_from_slice(entries);
        self.current.store(Arc::new(Snapshot {
            base: cur.base.clone(),
            delta: Arc::new(delta),
            deleted: cur.deleted.clone(),
        }));
    }

    /// Deletes live entries by key; they stop matching when this returns. Pass only keys
    /// that are present (the bank layer maps entry ids to keys); an absent key would be
    /// counted as deleted by [`LiveIndex::len`] until the next compaction.
    pub fn remove(&self, keys: &[u64]) {
        if keys.is_empty() {
            return;
        }
        let _writer = self.writer.lock().unwrap_or_else(|e| e.into_inner());
        let cur = self.current.load_full();
        let mut deleted = (*cur.deleted).clone();
        deleted.extend(keys.iter().copied());
        self.current.store(Arc::new(Snapshot {
            base: cur.base.clone(),
            delta: cur.delta.clone(),
            deleted: Arc::new(deleted),
        }));
    }

    /// Whether the delta has grown large enough that [`LiveIndex::compact`] pays off.
    pub fn wants_compaction(&self) -> bool {
        let cur = self.current.load();
        let limit = (cur.base.len() / 256).clamp(4096, 65536);
        cur.delta.len() > limit || cur.deleted.len() > limit
    }

    /// Merges the delta into a new base and drops deleted entries. Queries and writes
    /// continue meanwhile; writes made during the merge are carried over.
    pub fn compact(&self) {
        let _one_at_a_time = self.compacting.lock().unwrap_or_else(|e| e.into_inner());
        let before = self.current.load_full();
        let entries: Vec<(Hash256, u64)> = before
            .base
            .entries()
            .chain(before.delta.iter().copied())
            .filter(|(_, k)| !before.deleted.contains(k))
            .collect();
        let (hashes, keys) = entries.into_iter().unzip();
        let base = Arc::new(MihIndex::build(hashes, keys, self.threads));
        let _writer = self.writer.lock().unwrap_or_else(|e| e.into_inner());
        let cur = self.current.load_full();
        // Writes since `before`: delta entries appended after it, and new tombstones.
        let delta: Vec<(Hash256, u64)> = cur.delta[before.delta.len()..].to_vec();
        let deleted: HashSet<u64> = cur.deleted.difference(&before.deleted).copied().collect();
        self.current.store(Arc::new(Snapshot {
            base,
            delta: Arc::new(delta),
            deleted: Arc::new(deleted),
        }));
    }
}

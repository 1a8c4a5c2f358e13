//! Matching queries against loaded banks: PDQ frames (through the exact index), whole
//! videos (vPDQ), and file digests (MD5, SHA-256), with negative banks applied after
//! lookup.
//!
//! Negative banks: a PDQ query within `negative_distance` of any negative entry (PDQ, or
//! a frame of a negative video) is a known-benign collision, so its positive matches are
//! reported as suppressed instead of matched. For video queries the same rule applies
//! per frame: a suppressed frame does not count towards any video's match percentage.
//!
//! Live updates: [`Matcher::insert`] and [`Matcher::remove`] change the loaded entries
//! while queries run (a fleet worker applies its shared bank topic this way), without a
//! rebuild: the indexes are [`LiveIndex`]es, and the entry tables are append-only
//! (a removed entry's slot stays, unreachable, so index keys are never reused).

use std::collections::{HashMap, HashSet};
use std::io::{self, Write};
use std::path::Path;
use std::sync::{Arc, Mutex, RwLock};

use crate::bank::{Bank, Entry};
use crate::index::{LiveIndex, Snapshot};
use crate::lists::Signal;
use crate::mapfile::{self, FileError, Reader, Store, Writer, invalid};
use firebreak_hashing::Hash256;
use firebreak_hashing::vpdq::{self, VpdqFeature};

/// Thresholds for matching.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct MatchConfig {
    /// PDQ match distance (inclusive).
    pub pdq_distance: u32,
    /// Distance within which a negative entry suppresses a query.
    pub negative_distance: u32,
    /// vPDQ: frames below this quality are ignored on both sides.
    pub vpdq_quality: u8,
    /// vPDQ: frame match distance (inclusive).
    pub vpdq_distance: u32,
}

impl Default for MatchConfig {
    fn default() -> Self {
        MatchConfig {
            pdq_distance: vpdq::DISTANCE_THRESHOLD,
            negative_distance: vpdq::DISTANCE_THRESHOLD,
            vpdq_quality: vpdq::QUALITY_THRESHOLD,
            vpdq_distance: vpdq::DISTANCE_THRESHOLD,
        }
    }
}

/// The label that scopes an entry to one tenant: an entry labelled `tenant:NAME`
/// matches only streams of tenant `NAME` (a crisis confirmed by one platform's
/// responders, until a platform admin promotes it fleet-wide).
pub const TENANT_LABEL: &str = "tenant:";

/// Which entry a hit refers to.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct EntryRef {
    /// Bank name.
    pub bank: Arc<str>,
    /// Entry id.
    pub id: Arc<str>,
    /// Entry labels.
    pub labels: Arc<[String]>,
    /// The tenant it is scoped to (its [`TENANT_LABEL`] label), `None`: everyone's.
    pub tenant: Option<Arc<str>>,
}

impl EntryRef {
    /// The reference to entry `id` of `bank` with `labels`.
    pub fn new(bank: Arc<str>, id: &str, labels: &[String]) -> EntryRef {
        EntryRef {
            bank,
            id: Arc::from(id),
            tenant: labels
                .iter()
                .find_map(|l| l.strip_prefix(TENANT_LABEL))
                .map(Arc::from),
            labels: Arc::from(labels.to_vec()),
        }
    }

    /// Whether a query on behalf of `tenant` sees it (`None`: an unscoped query, such
    /// as the command line's, sees every entry).
    pub fn visible_to(&self, tenant: Option<&str>) -> bool {
        match (&self.tenant, tenant) {
            (Some(scope), Some(t)) => **scope == *t,
            _ => true,
        }
    }
}

/// An entry's labels and the tenant they scope it to, shared.
type LabelSet = (Arc<[String]>, Option<Arc<str>>);

/// Most distinct label sets an [`Interner`] remembers.
const MAX_INTERNED: usize = 4096;

/// One shared copy of each distinct label set and bank name: a bank's entries mostly
/// carry the same few label sets, and a copy per entry cost about 150 bytes of heap.
#[derive(Debug, Default)]
struct Interner {
    labels: HashMap<Vec<String>, LabelSet>,
    /// Bank names are few: every one is remembered.
    banks: HashMap<String, Arc<str>>,
}

impl Interner {
    fn bank(&mut self, bank: &str) -> Arc<str> {
        match self.banks.get(bank) {
            Some(b) => b.clone(),
            None => {
                let b: Arc<str> = Arc::from(bank);
                self.banks.insert(bank.to_owned(), b.clone());
                b
            }
        }
    }

    fn entry(&mut self, bank: &str, id: &str, labels: &[String]) -> EntryRef {
        let bank = self.bank(bank);
        let (labels, tenant) = match self.labels.get(labels) {
            Some(set) => set.clone(),
            None => {
                let fresh = EntryRef::new(bank.clone(), "", labels);
                let set = (fresh.labels, fresh.tenant);
                // Label sets unique to their entries (an incident id, say) gain nothing
                // from sharing: past this many, new sets are no longer remembered.
                if self.labels.len() < MAX_INTERNED {
                    self.labels.insert(labels.to_vec(), set.clone());
                }
                set
            }
        };
        EntryRef {
            bank,
            id: Arc::from(id),
            labels,
            tenant,
        }
    }
}

/// The entries behind an index's keys, compactly: every id in one arena, and per entry
/// the index of its shared (bank, labels) pair. About 8 bytes plus the id's bytes per
/// entry, where a table of [`EntryRef`]s cost about 100; an [`EntryRef`] is made only
/// for a hit.
#[derive(Debug, Default)]
struct RefTable {
    /// Every entry's id, one after the other (UTF-8).
    ids: Store<u8>,
    /// Where each entry's id ends in `ids` (it starts where the previous one ends).
    ends: Store<u32>,
    /// Each entry's index in `flavours`.
    flavour: Store<u32>,
    /// The distinct (bank, labels, tenant) triples, as an [`EntryRef`] with an empty id.
    flavours: Vec<EntryRef>,
    /// Per bank, where each label set is in `flavours` (at most [`MAX_INTERNED`] sets
    /// remembered; past that, a new set gets a new flavour each time).
    by_pair: HashMap<Arc<str>, HashMap<Vec<String>, u32>>,
}

impl RefTable {
    /// Appends an entry; returns its key.
    fn push(&mut self, interner: &mut Interner, bank: &str, id: &str, labels: &[String]) -> u64 {
        // Entries come in runs of one bank and label set: try the last one first.
        let last = self
            .flavour
            .last()
            .map(|&f| (f, &self.flavours[f as usize]));
        let flavour = match last {
            Some((f, r)) if &*r.bank == bank && *r.labels == *labels => f,
            _ => match self.by_pair.get(bank).and_then(|sets| sets.get(labels)) {
                Some(&f) => f,
                None => {
                    let bank = interner.bank(bank);
                    self.add_flavour(interner, bank, labels.to_vec())
                }
            },
        };
        let ids = self.ids.to_mut();
        ids.extend_from_slice(id.as_bytes());
        let end = u32::try_from(ids.len()).expect("under 4 GiB of entry ids");
        self.ends.to_mut().push(end);
        self.flavour.to_mut().push(flavour);
        (self.ends.len() - 1) as u64
    }

    /// Adds a (bank, labels) pair to `flavours`, remembered for reuse while fewer than
    /// [`MAX_INTERNED`] are; returns its index.
    fn add_flavour(&mut self, interner: &mut Interner, bank: Arc<str>, labels: Vec<String>) -> u32 {
        let f = u32::try_from(self.flavours.len()).expect("under 2^32 label sets");
        self.flavours.push(interner.entry(&bank, "", &labels));
        let remembered: usize = self.by_pair.values().map(HashMap::len).sum();
        if remembered < MAX_INTERNED {
            self.by_pair.entry(bank).or_default().insert(labels, f);
        }
        f
    }

    fn id_bytes(&self, key: u64) -> &[u8] {
        let k = key as usize;
        let start = if k == 0 { 0 } else { self.ends[k - 1] as usize };
        &self.ids[start..self.ends[k] as usize]
    }

    fn id(&self, key: u64) -> &str {
        // Pushed as `&str`, or checked to be UTF-8 at every boundary when read.
        std::str::from_utf8(self.id_bytes(key)).unwrap_or_default()
    }

    /// The entry behind `key`.
    fn get(&self, key: u64) -> EntryRef {
        let flavour = &self.flavours[self.flavour[key as usize] as usize];
        EntryRef {
            id: Arc::from(self.id(key)),
            ..flavour.clone()
        }
    }

    /// Whether `key` is entry `id` of `bank`.
    fn is(&self, key: u64, bank: &str, id: &str) -> bool {
        self.id_bytes(key) == id.as_bytes()
            && &*self.flavours[self.flavour[key as usize] as usize].bank == bank
    }

    fn reserve(&mut self, entries: usize, id_bytes: usize) {
        self.ends.to_mut().reserve(entries);
        self.flavour.to_mut().reserve(entries);
        self.ids.to_mut().reserve(id_bytes);
    }

    fn len(&self) -> usize {
        self.ends.len()
    }

    fn write_to<W: Write>(&self, w: &mut Writer<W>) -> io::Result<()> {
        w.u32(self.flavours.len() as u32)?;
        for f in &self.flavours {
            w.str(&f.bank)?;
            write_labels(w, &f.labels)?;
        }
        w.array::<u8>(&self.ids)?;
        w.array::<u32>(&self.ends)?;
        w.array::<u32>(&self.flavour)
    }

    /// Reads a table written by [`RefTable::write_to`] and checks it: one flavour per
    /// entry and each in range, ids ending in order at UTF-8 boundaries.
    fn read_from(r: &mut Reader, interner: &mut Interner) -> Result<RefTable, FileError> {
        let mut table = RefTable::default();
        let flavours = r.u32()?;
        for _ in 0..flavours {
            let bank = interner.bank(&r.str()?);
            let labels = read_labels(r)?;
            table.add_flavour(interner, bank, labels);
        }
        table.ids = r.array()?;
        table.ends = r.array()?;
        table.flavour = r.array()?;
        let ids = std::str::from_utf8(&table.ids).map_err(|_| invalid("entry ids not UTF-8"))?;
        if table.ends.len() != table.flavour.len() {
            return Err(invalid("entry ids and flavours differ in number"));
        }
        let mut last = 0u32;
        for &end in table.ends.iter() {
            if end < last || !ids.is_char_boundary(end as usize) {
                return Err(invalid("an entry id's end"));
            }
            last = end;
        }
        if last as usize != ids.len() {
            return Err(invalid("entry ids past the last entry"));
        }
        if table.flavour.iter().any(|&f| f >= flavours) {
            return Err(invalid("an entry's flavour out of range"));
        }
        Ok(table)
    }

    fn shrink_to_fit(&mut self) {
        self.ids.shrink_to_fit();
        self.ends.shrink_to_fit();
        self.flavour.shrink_to_fit();
    }
}

/// A PDQ hit.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PdqHit {
    /// The entry.
    pub entry: EntryRef,
    /// Hamming distance from the query.
    pub distance: u32,
}

/// The outcome of one PDQ query.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct PdqResult {
    /// Positive matches (empty when suppressed).
    pub matches: Vec<PdqHit>,
    /// Positive matches suppressed by a negative entry.
    pub suppressed: Vec<PdqHit>,
    /// The negative entries the query matched.
    pub negative: Vec<PdqHit>,
}

/// A banked video matched by a query video.
#[derive(Debug, Clone, PartialEq)]
pub struct VideoHit {
    /// The entry.
    pub entry: EntryRef,
    /// Percentage of the query's unique good frames that match a frame of the entry.
    pub query_match_percent: f64,
    /// Percentage of the entry's unique good frames matched by a query frame.
    pub compared_match_percent: f64,
}

/// A digest (MD5 / SHA-256) hit.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DigestHit {
    /// The entry.
    pub entry: EntryRef,
    /// `"video_md5"` or `"sha256"`.
    pub kind: &'static str,
}

/// A banked video's frames after vPDQ preparation.
#[derive(Debug, Clone)]
struct Video {
    entry: EntryRef,
    /// Unique good frames (the denominator of the compared percentage).
    frames: usize,
}

/// Exact digests.
#[derive(Debug, Default)]
struct Digests {
    md5: HashMap<[u8; 16], Vec<EntryRef>>,
    sha256: HashMap<[u8; 32], Vec<EntryRef>>,
}

/// Everything loaded from the banks, ready to match.
///
/// The entry tables sit behind short read-write locks (never held across anything
/// but a table look-up); index keys are positions in them.
#[derive(Debug)]
pub struct Matcher {
    config: MatchConfig,
    pdq_refs: RwLock<RefTable>,
    pdq: LiveIndex,
    negative_refs: RwLock<RefTable>,
    negative: LiveIndex,
    videos: RwLock<Vec<Video>>,
    /// Videos not removed.
    live_videos: std::sync::atomic::AtomicUsize,
    /// Key = video index << 32 | unique frame index.
    frames: LiveIndex,
    digests: RwLock<Digests>,
    /// Orders live updates (insert, remove) among themselves, and shares label sets.
    updates: Mutex<Interner>,
}

fn read<T>(l: &RwLock<T>) -> std::sync::RwLockReadGuard<'_, T> {
    l.read().unwrap_or_else(|e| e.into_inner())
}

fn write<T>(l: &RwLock<T>) -> std::sync::RwLockWriteGuard<'_, T> {
    l.write().unwrap_or_else(|e| e.into_inner())
}

fn same(r: &EntryRef, bank: &str, id: &str) -> bool {
    &*r.bank == bank && &*r.id == id
}

impl Matcher {
    /// Loads banks, building the indexes on up to `threads` threads.
    pub fn new<'a>(
        banks: impl IntoIterator<Item = &'a Bank>,
        config: MatchConfig,
        threads: usize,
    ) -> Self {
        let mut pdq_refs = RefTable::default();
        let mut pdq = Vec::new();
        let mut negative_refs = RefTable::default();
        let mut negative = Vec::new();
        let mut videos = Vec::new();
        let mut frames = Vec::new();
        let mut md5: HashMap<[u8; 16], Vec<EntryRef>> = HashMap::new();
        let mut sha256: HashMap<[u8; 32], Vec<EntryRef>> = HashMap::new();
        let mut interner = Interner::default();
        let banks: Vec<&Bank> = banks.into_iter().collect();
        // Size the positive table once: it is most of the memory.
        let (entries, id_bytes) = banks
            .iter()
            .filter(|b| !b.negative)
            .flat_map(|b| b.entries())
            .filter(|e| matches!(e.signal, Signal::Pdq { .. }))
            .fold((0, 0), |(n, bytes), e| (n + 1, bytes + e.id.len()));
        pdq_refs.reserve(entries, id_bytes);
        pdq.reserve(entries);
        for bank in banks {
            for e in bank.entries() {
                let (name, id, labels) = (&bank.name, &e.id, &e.labels);
                match &e.signal {
                    Signal::Pdq { hash, .. } if bank.negative => {
                        let key = negative_refs.push(&mut interner, name, id, labels);
                        negative.push((*hash, key));
                    }
                    Signal::Pdq { hash, .. } => {
                        let key = pdq_refs.push(&mut interner, name, id, labels);
                        pdq.push((*hash, key));
                    }
                    Signal::Vpdq(features) if bank.negative => {
                        let key = negative_refs.push(&mut interner, name, id, labels);
                        for h in vpdq::prepare(features, config.vpdq_quality) {
                            negative.push((h, key));
                        }
                    }
                    Signal::Vpdq(features) => {
                        let entry = interner.entry(name, id, labels);
                        let unique = vpdq::prepare(features, config.vpdq_quality);
                        let video = videos.len() as u64;
                        for (i, h) in unique.iter().enumerate() {
                            frames.push((*h, video << 32 | i as u64));
                        }
                        videos.push(Video {
                            entry,
                            frames: unique.len(),
                        });
                    }
                    Signal::Md5(d) => md5
                        .entry(*d)
                        .or_default()
                        .push(interner.entry(name, id, labels)),
                    Signal::Sha256(d) => sha256
                        .entry(*d)
                        .or_default()
                        .push(interner.entry(name, id, labels)),
                }
            }
        }
        pdq_refs.shrink_to_fit();
        negative_refs.shrink_to_fit();
        Matcher {
            config,
            pdq_refs: RwLock::new(pdq_refs),
            pdq: LiveIndex::new(pdq, threads),
            negative_refs: RwLock::new(negative_refs),
            negative: LiveIndex::new(negative, threads),
            live_videos: videos.len().into(),
            videos: RwLock::new(videos),
            frames: LiveIndex::new(frames, threads),
            digests: RwLock::new(Digests { md5, sha256 }),
            updates: Mutex::new(interner),
        }
    }

    /// The thresholds in use.
    pub fn config(&self) -> MatchConfig {
        self.config
    }

    /// Counts of loaded PDQ hashes, negative hashes, videos, video frames and digests.
    pub fn sizes(&self) -> MatcherSizes {
        MatcherSizes {
            pdq: self.pdq.len(),
            negative: self.negative.len(),
            videos: self.live_videos.load(std::sync::atomic::Ordering::Relaxed),
            video_frames: self.frames.len(),
            digests: {
                let d = read(&self.digests);
                d.md5.len() + d.sha256.len()
            },
        }
    }

    /// Adds one PDQ entry to a positive bank at run time; it matches once this returns.
    pub fn add_pdq(&self, bank: &str, id: &str, hash: Hash256, labels: Vec<String>) {
        let entry = Entry {
            id: id.to_owned(),
            signal: Signal::Pdq {
                hash,
                quality: None,
            },
            labels,
        };
        self.insert(bank, false, &entry);
    }

    /// Adds `entry` of bank `bank` (negative or not) at run time; it matches once this
    /// returns. Replacing an entry is [`Matcher::remove`] of the old one, then this.
    pub fn insert(&self, bank: &str, negative: bool, entry: &Entry) {
        let mut interner = self.updates.lock().unwrap_or_else(|e| e.into_inner());
        let (id, labels) = (&entry.id, &entry.labels);
        // The table first, then the index: every key a query finds has its entry.
        let mut push = |refs: &RwLock<RefTable>| write(refs).push(&mut interner, bank, id, labels);
        match &entry.signal {
            Signal::Pdq { hash, .. } if negative => {
                let key = push(&self.negative_refs);
                self.negative.add(&[(*hash, key)]);
            }
            Signal::Pdq { hash, .. } => {
                let key = push(&self.pdq_refs);
                self.pdq.add(&[(*hash, key)]);
            }
            Signal::Vpdq(features) if negative => {
                let key = push(&self.negative_refs);
                let hashes: Vec<(Hash256, u64)> = vpdq::prepare(features, self.config.vpdq_quality)
                    .into_iter()
                    .map(|h| (h, key))
                    .collect();
                self.negative.add(&hashes);
            }
            Signal::Vpdq(features) => {
                let r = interner.entry(bank, id, labels);
                let unique = vpdq::prepare(features, self.config.vpdq_quality);
                let video = {
                    let mut videos = write(&self.videos);
                    videos.push(Video {
                        entry: r,
                        frames: unique.len(),
                    });
                    (videos.len() - 1) as u64
                };
                let keys: Vec<(Hash256, u64)> = unique
                    .iter()
                    .enumerate()
                    .map(|(i, h)| (*h, video << 32 | i as u64))
                    .collect();
                self.frames.add(&keys);
                self.live_videos
                    .fetch_add(1, std::sync::atomic::Ordering::Relaxed);
            }
            Signal::Md5(d) => {
                let r = interner.entry(bank, id, labels);
                write(&self.digests).md5.entry(*d).or_default().push(r);
            }
            Signal::Sha256(d) => {
                let r = interner.entry(bank, id, labels);
                write(&self.digests).sha256.entry(*d).or_default().push(r);
            }
        }
    }

    /// Removes `entry` of bank `bank` (as it was inserted or loaded) at run time; it
    /// stops matching once this returns. False if it was not loaded.
    pub fn remove(&self, bank: &str, negative: bool, entry: &Entry) -> bool {
        let _updates = self.updates.lock().unwrap_or_else(|e| e.into_inner());
        // An entry's keys are found by querying its own hash at distance 0.
        let find = |index: &LiveIndex, refs: &RwLock<RefTable>, hash: &Hash256| {
            let refs = read(refs);
            index
                .query(hash, 0)
                .into_iter()
                .map(|h| h.key)
                .find(|&k| refs.is(k, bank, &entry.id))
        };
        match &entry.signal {
            Signal::Pdq { hash, .. } => {
                let (index, refs) = if negative {
                    (&self.negative, &self.negative_refs)
                } else {
                    (&self.pdq, &self.pdq_refs)
                };
                let Some(key) = find(index, refs, hash) else {
                    return false;
                };
                index.remove(&[key]);
                true
            }
            Signal::Vpdq(features) => {
                let unique = vpdq::prepare(features, self.config.vpdq_quality);
                let Some(first) = unique.first() else {
                    return false;
                };
                if negative {
                    let Some(key) = find(&self.negative, &self.negative_refs, first) else {
                        return false;
                    };
                    self.negative.remove(&[key]);
                    return true;
                }
                let videos = read(&self.videos);
                let found = self
                    .frames
                    .query(first, 0)
                    .into_iter()
                    .map(|h| h.key >> 32)
                    .find(|&v| same(&videos[v as usize].entry, bank, &entry.id));
                let Some(video) = found else {
                    return false;
                };
                let keys: Vec<u64> = (0..videos[video as usize].frames as u64)
                    .map(|i| video << 32 | i)
                    .collect();
                drop(videos);
                self.frames.remove(&keys);
                self.live_videos
                    .fetch_sub(1, std::sync::atomic::Ordering::Relaxed);
                true
            }
            Signal::Md5(d) => remove_digest(&mut write(&self.digests).md5, d, bank, &entry.id),
            Signal::Sha256(d) => {
                remove_digest(&mut write(&self.digests).sha256, d, bank, &entry.id)
            }
        }
    }

    /// Merges the indexes' deltas into new bases where that pays off (CPU-bound: call
    /// from a thread that may block, after a batch of live updates).
    pub fn compact_if_needed(&self) {
        for index in [&self.pdq, &self.negative, &self.frames] {
            if index.wants_compaction() {
                index.compact();
            }
        }
    }

    fn is_negative(&self, hash: &Hash256, tenant: Option<&str>) -> Vec<PdqHit> {
        let hits = self.negative.query(hash, self.config.negative_distance);
        if hits.is_empty() {
            return Vec::new();
        }
        let refs = read(&self.negative_refs);
        hits.into_iter()
            .map(|h| PdqHit {
                entry: refs.get(h.key),
                distance: h.distance,
            })
            .filter(|h| h.entry.visible_to(tenant))
            .collect()
    }

    /// The negative entries within the negative distance of `hash` that a stream of
    /// `tenant` sees (empty: not a known-benign frame).
    pub fn negative_hits_for(&self, hash: &Hash256, tenant: Option<&str>) -> Vec<PdqHit> {
        self.is_negative(hash, tenant)
    }

    /// Matches one PDQ hash against every entry.
    pub fn match_pdq(&self, hash: &Hash256) -> PdqResult {
        self.match_pdq_for(hash, None)
    }

    /// Matches one PDQ hash on behalf of a stream of `tenant`: entries scoped to
    /// another tenant (positive or negative) neither match nor suppress.
    pub fn match_pdq_for(&self, hash: &Hash256, tenant: Option<&str>) -> PdqResult {
        let hits = self.pdq.query(hash, self.config.pdq_distance);
        let mut matches: Vec<PdqHit> = if hits.is_empty() {
            Vec::new()
        } else {
            let refs = read(&self.pdq_refs);
            hits.into_iter()
                .map(|h| PdqHit {
                    entry: refs.get(h.key),
                    distance: h.distance,
                })
                .filter(|h| h.entry.visible_to(tenant))
                .collect()
        };
        matches.sort_by(|a, b| {
            a.distance
                .cmp(&b.distance)
                .then_with(|| a.entry.id.cmp(&b.entry.id))
        });
        let negative = if matches.is_empty() {
            Vec::new()
        } else {
            self.is_negative(hash, tenant)
        };
        if negative.is_empty() {
            PdqResult {
                matches,
                ..PdqResult::default()
            }
        } else {
            PdqResult {
                matches: Vec::new(),
                suppressed: matches,
                negative,
            }
        }
    }

    /// For one frame hash, the banked videos (indexes) with a frame within the vPDQ
    /// distance, each with the matched unique-frame indexes. Empty when the frame is
    /// suppressed by a negative entry.
    pub fn frame_video_hits(&self, hash: &Hash256) -> Vec<(u32, u32)> {
        self.frame_video_hits_for(hash, None)
    }

    /// [`Matcher::frame_video_hits`] on behalf of a stream of `tenant` (see
    /// [`Matcher::match_pdq_for`]).
    pub fn frame_video_hits_for(&self, hash: &Hash256, tenant: Option<&str>) -> Vec<(u32, u32)> {
        let mut hits: Vec<(u32, u32)> = self
            .frames
            .query(hash, self.config.vpdq_distance)
            .into_iter()
            .map(|h| ((h.key >> 32) as u32, h.key as u32))
            .collect();
        if tenant.is_some() && !hits.is_empty() {
            let videos = read(&self.videos);
            hits.retain(|(v, _)| videos[*v as usize].entry.visible_to(tenant));
        }
        if !hits.is_empty() && !self.is_negative(hash, tenant).is_empty() {
            hits.clear();
        }
        hits.sort_unstable();
        hits
    }

    /// The entry of video `index` (from [`Matcher::frame_video_hits`]).
    pub fn video_entry(&self, index: u32) -> EntryRef {
        read(&self.videos)[index as usize].entry.clone()
    }

    /// Matches a whole video against every banked video, with vPDQ's rules (dedupe,
    /// quality filter, distance): the same percentages as [`vpdq::compare`] against
    /// each banked video, for every video with at least one matching frame.
    pub fn match_video(&self, features: &[VpdqFeature]) -> Vec<VideoHit> {
        let query = vpdq::prepare(features, self.config.vpdq_quality);
        if query.is_empty() {
            return Vec::new();
        }
        let mut query_matched: HashMap<u32, usize> = HashMap::new();
        let mut compared_matched: HashMap<u32, HashSet<u32>> = HashMap::new();
        for h in &query {
            let hits = self.frame_video_hits(h);
            let mut last = None;
            for (video, frame) in hits {
                if last != Some(video) {
                    *query_matched.entry(video).or_default() += 1;
                    last = Some(video);
                }
                compared_matched.entry(video).or_default().insert(frame);
            }
        }
        let videos = read(&self.videos);
        let mut out: Vec<VideoHit> = query_matched
            .into_iter()
            .map(|(video, n)| {
                let v = &videos[video as usize];
                VideoHit {
                    entry: v.entry.clone(),
                    query_match_percent: n as f64 * 100.0 / query.len() as f64,
                    compared_match_percent: compared_matched[&video].len() as f64 * 100.0
                        / v.frames as f64,
                }
            })
            .collect();
        drop(videos);
        out.sort_by(|a, b| {
            b.query_match_percent
                .total_cmp(&a.query_match_percent)
                .then_with(|| a.entry.id.cmp(&b.entry.id))
        });
        out
    }

    /// Exact digest matches.
    pub fn match_digests(
        &self,
        md5: Option<&[u8; 16]>,
        sha256: Option<&[u8; 32]>,
    ) -> Vec<DigestHit> {
        let mut out = Vec::new();
        let digests = read(&self.digests);
        if let Some(list) = md5.and_then(|d| digests.md5.get(d)) {
            out.extend(list.iter().map(|e| DigestHit {
                entry: e.clone(),
                kind: "video_md5",
            }));
        }
        if let Some(list) = sha256.and_then(|d| digests.sha256.get(d)) {
            out.extend(list.iter().map(|e| DigestHit {
                entry: e.clone(),
                kind: "sha256",
            }));
        }
        out
    }
}

/// The most labels an entry read from a snapshot may carry (an import allows far fewer).
const MAX_LABELS: u32 = 1 << 16;

fn write_labels<W: Write>(w: &mut Writer<W>, labels: &[String]) -> io::Result<()> {
    w.u32(labels.len() as u32)?;
    labels.iter().try_for_each(|l| w.str(l))
}

fn read_labels(r: &mut Reader) -> Result<Vec<String>, FileError> {
    let n = r.u32()?;
    if n > MAX_LABELS {
        return Err(invalid(format!("{n} labels on one entry")));
    }
    (0..n).map(|_| r.str()).collect()
}

fn write_entry<W: Write>(w: &mut Writer<W>, e: &EntryRef) -> io::Result<()> {
    w.str(&e.bank)?;
    w.str(&e.id)?;
    write_labels(w, &e.labels)
}

fn read_entry(r: &mut Reader, interner: &mut Interner) -> Result<EntryRef, FileError> {
    let bank = r.str()?;
    let id = r.str()?;
    let labels = read_labels(r)?;
    Ok(interner.entry(&bank, &id, &labels))
}

fn write_digests<W: Write, const N: usize>(
    w: &mut Writer<W>,
    map: &HashMap<[u8; N], Vec<EntryRef>>,
) -> io::Result<()> {
    w.u64(map.len() as u64)?;
    for (digest, entries) in map {
        w.bytes(digest)?;
        w.u32(entries.len() as u32)?;
        entries.iter().try_for_each(|e| write_entry(w, e))?;
    }
    Ok(())
}

fn read_digests<const N: usize>(
    r: &mut Reader,
    interner: &mut Interner,
) -> Result<HashMap<[u8; N], Vec<EntryRef>>, FileError> {
    let n = r.count(1 << 40)?;
    let mut map = HashMap::new();
    for _ in 0..n {
        let digest: [u8; N] = r.fixed()?;
        let count = r.u32()?;
        let entries = (0..count)
            .map(|_| read_entry(r, interner))
            .collect::<Result<Vec<_>, _>>()?;
        map.insert(digest, entries);
    }
    Ok(map)
}

impl Matcher {
    /// Writes everything loaded, as it stands, to a snapshot file at `path` (atomically:
    /// see [`mapfile`]) with `key` (what it was made from, for
    /// [`crate::store::BankStore::load_matcher`] to tell a stale snapshot).
    /// [`Matcher::read_snapshot`] reads it back without rebuilding anything. Live
    /// updates wait while it is written.
    pub fn write_snapshot(&self, path: &Path, key: &[u8]) -> io::Result<()> {
        let _updates = self.updates.lock().unwrap_or_else(|e| e.into_inner());
        mapfile::write_file(path, key, |w| {
            // The distances are per query: the loader brings its own.
            w.u8(self.config.vpdq_quality)?;
            read(&self.pdq_refs).write_to(w)?;
            self.pdq.snapshot().write_to(w)?;
            read(&self.negative_refs).write_to(w)?;
            self.negative.snapshot().write_to(w)?;
            let videos = read(&self.videos);
            w.u64(videos.len() as u64)?;
            for v in videos.iter() {
                write_entry(w, &v.entry)?;
                w.u64(v.frames as u64)?;
            }
            w.u64(self.live_videos.load(std::sync::atomic::Ordering::Relaxed) as u64)?;
            self.frames.snapshot().write_to(w)?;
            let digests = read(&self.digests);
            write_digests(w, &digests.md5)?;
            write_digests(w, &digests.sha256)
        })
    }

    /// Reads a snapshot written by [`Matcher::write_snapshot`] and checked by
    /// [`mapfile::load`], its big arrays used in place (no index is rebuilt), after
    /// checking that every index key refers to an entry, to match with `config` (whose
    /// vPDQ quality must be the one the snapshot's video frames were filtered with).
    /// Checks and later compactions run on up to `threads` threads.
    pub(crate) fn read_snapshot(
        file: &mapfile::Loaded,
        config: MatchConfig,
        threads: usize,
    ) -> Result<Self, FileError> {
        let mut r = file.reader();
        let quality = r.u8()?;
        if quality != config.vpdq_quality {
            return Err(invalid(format!(
                "video frames filtered at quality {quality}, not {}",
                config.vpdq_quality
            )));
        }
        let mut interner = Interner::default();
        let pdq_refs = RefTable::read_from(&mut r, &mut interner)?;
        let pdq = Snapshot::read_from(&mut r, threads)?;
        let negative_refs = RefTable::read_from(&mut r, &mut interner)?;
        let negative = Snapshot::read_from(&mut r, threads)?;
        for (refs, index, what) in [
            (&pdq_refs, &pdq, "pdq"),
            (&negative_refs, &negative, "negative"),
        ] {
            if index.max_key().is_some_and(|k| k >= refs.len() as u64) {
                return Err(invalid(format!("a {what} index key without its entry")));
            }
        }
        let n = r.count(1 << 32)?;
        let mut videos = Vec::with_capacity(n.min(1 << 20));
        for _ in 0..n {
            videos.push(Video {
                entry: read_entry(&mut r, &mut interner)?,
                frames: r.count(1 << 32)?,
            });
        }
        let live_videos = r.count(n)?;
        let frames = Snapshot::read_from(&mut r, threads)?;
        let orphan = frames.all_keys().any(|k| {
            videos
                .get((k >> 32) as usize)
                .is_none_or(|v| (k & 0xFFFF_FFFF) as usize >= v.frames)
        });
        if orphan {
            return Err(invalid("a video frame key without its video"));
        }
        let md5 = read_digests(&mut r, &mut interner)?;
        let sha256 = read_digests(&mut r, &mut interner)?;
        Ok(Matcher {
            config,
            pdq_refs: RwLock::new(pdq_refs),
            pdq: LiveIndex::from_snapshot(pdq, threads),
            negative_refs: RwLock::new(negative_refs),
            negative: LiveIndex::from_snapshot(negative, threads),
            videos: RwLock::new(videos),
            live_videos: live_videos.into(),
            frames: LiveIndex::from_snapshot(frames, threads),
            digests: RwLock::new(Digests { md5, sha256 }),
            updates: Mutex::new(interner),
        })
    }
}

fn remove_digest<const N: usize>(
    map: &mut HashMap<[u8; N], Vec<EntryRef>>,
    digest: &[u8; N],
    bank: &str,
    id: &str,
) -> bool {
    let Some(list) = map.get_mut(digest) else {
        return false;
    };
    let Some(at) = list.iter().position(|r| same(r, bank, id)) else {
        return false;
    };
    list.remove(at);
    if list.is_empty() {
        map.remove(digest);
    }
    true
}

/// What a [`Matcher`] holds.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct MatcherSizes {
    /// Positive PDQ hashes.
    pub pdq: usize,
    /// Negative hashes (PDQ and negative video frames).
    pub negative: usize,
    /// Positive videos.
    pub videos: usize,
    /// Their unique good frames.
    pub video_frames: usize,
    /// Distinct digests.
    pub digests: usize,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_ref_table_keeps_ids_apart_and_shares_label_sets() {
        let mut interner = Interner::default();
        let mut table = RefTable::default();
        let l = |v: &[&str]| v.iter().map(|s| s.to_string()).collect::<Vec<String>>();
        let keys = [
            table.push(&mut interner, "crisis", "e1", &l(&["a", "b"])),
            table.push(&mut interner, "crisis", "", &l(&["a", "b"])),
            table.push(&mut interner, "other", "clip/f12@crop90", &l(&["a", "b"])),
            table.push(&mut interner, "crisis", "ünïcode", &l(&["tenant:acme"])),
        ];
        assert_eq!(keys, [0, 1, 2, 3]);
        let ids: Vec<Arc<str>> = keys.iter().map(|&k| table.get(k).id).collect();
        assert_eq!(
            ids.iter().map(|s| &**s).collect::<Vec<_>>(),
            ["e1", "", "clip/f12@crop90", "ünïcode"]
        );
        let (a, b, c, d) = (table.get(0), table.get(1), table.get(2), table.get(3));
        assert!(
            Arc::ptr_eq(&a.labels, &b.labels),
            "same bank and labels: shared"
        );
        assert_eq!(*c.bank, *"other");
        assert_eq!(*c.labels, ["a", "b"]);
        assert_eq!(d.tenant.as_deref(), Some("acme"));
        assert_eq!(
            table.flavours.len(),
            3,
            "three distinct (bank, labels) pairs"
        );
        assert!(table.is(2, "other", "clip/f12@crop90"));
        assert!(!table.is(2, "crisis", "clip/f12@crop90"), "another bank");
        assert!(!table.is(0, "crisis", "e"), "a prefix of the id");
        assert!(table.is(1, "crisis", ""));
    }
}

//! The immutable multi-index hash table (Norouzi, Punjani and Fleet, "Fast Search in
//! Hamming Space with Multi-Index Hashing", CVPR 2012).
//!
//! The 256 bits are cut into `m` contiguous substrings. If two hashes differ in at most
//! `d` bits, then by the pigeonhole principle at least one substring differs in at most
//! `r = d / m` bits (otherwise the total would be at least `m * (r + 1) > d`). So the
//! index keeps one table per substring, bucketed by the substring's value, and a query
//! visits, in every table, the buckets whose value lies within `r` bits of the query's
//! substring. Every hash found there is verified against the full 256 bits; a hash can
//! be found in several tables, so results are deduplicated. Nothing within `d` is ever
//! missed, which is why the result equals a linear scan.
//!
//! Each table is a counting-sorted array of slot numbers (3 bytes each below 2^24 hashes,
//! else 4) plus an offsets array
//! with one entry per possible substring value (`2^w + 1` for a `w`-bit substring), so
//! a bucket is one contiguous run. The number of substrings is chosen at build time from
//! the number of hashes with a cost model (bucket probes plus expected candidates, each
//! one random memory access), with the offsets arrays capped at four entries per hash.
//!
//! Real corpora are skewed: near-flat images and shared templates make some substring
//! values far more common than others, and a query carrying one of them finds a bucket
//! tens of thousands of hashes deep. Two things keep such a query's latency near the
//! median's:
//! - the probe radius is chosen per table and per query (see `allocate_radii`), so the
//!   tables where the query's buckets are deep are skipped and others widened;
//! - a heavy bucket (16 times the mean and at least 64 hashes) keeps a copy of half of
//!   each of its hashes inline, in bucket order: a sequential scan of those 128 bits
//!   (about 0.5 ns a hash) rules out nearly all of the bucket, and only what is within
//!   the distance on that half is verified by a random access (about 40 ns at 10M
//!   hashes). The copy costs memory: about 8 bytes per hash on the clustered bench
//!   corpus at 10M.

use firebreak_hashing::Hash256;

use crate::mapfile::{FileError, Pod, Reader, Store, Writer, invalid};

/// Longest substring the tables use (an offsets array of 2^26 + 1 `u32` is 256 MiB).
const MAX_WIDTH: u32 = 26;
/// Fewest substrings considered (32-bit substrings).
const MIN_SUBSTRINGS: u32 = 10;
/// Most substrings considered (8-bit substrings).
const MAX_SUBSTRINGS: u32 = 32;
/// Below this many hashes a linear scan is at least as fast as any table.
const FLAT_BELOW: usize = 8192;
/// A bucket is heavy when it holds this many times the mean bucket (and at least
/// [`HEAVY_MIN`] hashes): half of each of its hashes is stored again inline, in bucket
/// order, so that ruling them out is a sequential scan rather than one random access
/// each. Measured on the clustered bench corpus: 8 and 32 gave a slower p99 than 16 at
/// 1M and 10M hashes.
const HEAVY_FACTOR: f64 = 16.0;
/// The fewest hashes a heavy bucket holds.
const HEAVY_MIN: u32 = 64;
/// How many times cheaper a hash in a heavy bucket's sequential scan is than a random
/// read, for the planner (a scan reads 16 bytes a hash, ~0.5 ns, against ~40 ns for a
/// random read at 10M hashes; 16 kept conservative: 32 made no difference and 64 a
/// slower p99 on the bench corpus).
const SEQUENTIAL_SPEEDUP: f64 = 16.0;
/// The distance the table layout is optimised for (vPDQ and HMA's default threshold).
pub const DESIGN_DISTANCE: u32 = 31;

/// One substring table.
#[derive(Debug, Clone)]
struct Table {
    /// First bit of the substring.
    start: u32,
    /// Width in bits (<= 32).
    width: u32,
    /// `offsets[v]..offsets[v + 1]` is the bucket of substring value `v` in `slots`.
    offsets: Store<u32>,
    /// Slot numbers, grouped by substring value.
    slots: Slots,
    /// Buckets at least this large are heavy.
    heavy_min: u32,
    /// Where each heavy bucket starts in `slots`, ascending.
    heavy_lo: Store<u32>,
    /// Where the same bucket starts in `inline`.
    heavy_at: Store<u32>,
    /// Half of each hash in every heavy bucket, in the same order as in `slots`: the
    /// 128 bits (limbs `half * 2` and `half * 2 + 1`) that hold less of this table's
    /// substring, so that they tell the bucket's hashes apart.
    inline: Store<[u64; 2]>,
    /// Which half `inline` holds (0 or 1).
    half: usize,
}

/// Slot numbers packed in 3 bytes each while every slot fits (below 2^24 hashes: 4 bytes
/// saved per hash and table), else 4.
#[derive(Debug, Clone)]
struct Slots {
    /// Bytes per slot number: 3 or 4.
    width: usize,
    /// Little-endian slot numbers, plus one byte of padding so that a 3-byte number can
    /// be read as the low bytes of a 4-byte load.
    bytes: Store<u8>,
}

impl Slots {
    /// Bytes per slot number for `count` hashes.
    fn width_for(count: usize) -> usize {
        if count <= 1 << 24 { 3 } else { 4 }
    }

    #[inline(always)]
    fn get(&self, i: usize) -> u32 {
        let at = i * self.width;
        let word = u32::from_le_bytes(self.bytes[at..at + 4].try_into().expect("4 bytes"));
        if self.width == 3 {
            word & 0x00FF_FFFF
        } else {
            word
        }
    }

    /// Stores `slot` at position `i` of `bytes`, `width` bytes a number.
    fn set(bytes: &mut [u8], width: usize, i: usize, slot: u32) {
        let at = i * width;
        bytes[at..at + width].copy_from_slice(&slot.to_le_bytes()[..width]);
    }

    /// The slot numbers at positions `lo..hi`, appended to `out`.
    #[inline(always)]
    fn extend(&self, lo: usize, hi: usize, out: &mut Vec<u32>) {
        let bytes = &self.bytes[lo * self.width..hi * self.width];
        if self.width == 3 {
            out.extend(
                bytes
                    .chunks_exact(3)
                    .map(|c| u32::from_le_bytes([c[0], c[1], c[2], 0])),
            );
        } else {
            out.extend(
                bytes
                    .chunks_exact(4)
                    .map(|c| u32::from_le_bytes([c[0], c[1], c[2], c[3]])),
            );
        }
    }
}

impl Table {
    /// Notes bucket `value` of this table (table `j`, `distance` bits from the query's
    /// substring) in `probes` if it is not empty; returns what probing it costs.
    #[inline(always)]
    fn probe(&self, j: usize, value: u32, distance: usize, probes: &mut Vec<Probe>) -> f64 {
        let offsets: &[u32] = &self.offsets;
        let (lo, hi) = (offsets[value as usize], offsets[value as usize + 1]);
        if hi > lo {
            probes.push(Probe {
                table: j as u16,
                distance: distance as u16,
                lo,
                hi,
            });
        }
        self.bucket_cost(hi - lo)
    }

    /// Expected cost of probing a bucket of `size` hashes, in random memory accesses.
    #[inline(always)]
    fn bucket_cost(&self, size: u32) -> f64 {
        if size >= self.heavy_min {
            1.0 + f64::from(size) / SEQUENTIAL_SPEEDUP
        } else {
            1.0 + f64::from(size)
        }
    }
}

/// A stored hash, aligned to 32 bytes so that it never straddles two cache lines: a
/// verification's random read is one miss, not two.
#[derive(Debug, Clone, Copy, Default)]
#[repr(C, align(32))]
pub(crate) struct Row([u64; 4]);

// SAFETY: four `u64`s, 32 bytes with an alignment of 32: no padding, any bits valid.
#[allow(unsafe_code)]
unsafe impl Pod for Row {}

impl Row {
    #[inline(always)]
    fn hash(&self) -> Hash256 {
        Hash256::from_limbs(self.0)
    }
}

/// An immutable, exact Hamming-range index over 256-bit hashes, each with a `u64` key.
#[derive(Debug, Clone, Default)]
pub struct MihIndex {
    hashes: Store<Row>,
    /// The key of each slot; empty when every key equals its slot (the common case of
    /// an index built over a table's rows, where storing them would cost 8 bytes a hash).
    keys: Store<u64>,
    tables: Vec<Table>,
}

/// How a query finds its candidates.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Strategy {
    /// Whichever of the two is expected to be cheaper.
    Auto,
    /// Probe the substring tables (falls back to a scan if there are none).
    Tables,
    /// Compare against every stored hash.
    Scan,
}

/// One result: the key of a stored hash and its distance from the query.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct Hit {
    /// The key the hash was stored with.
    pub key: u64,
    /// Hamming distance from the query.
    pub distance: u32,
}

/// A non-empty bucket within the uniform probe radius of a query's substring.
#[derive(Debug, Clone, Copy)]
struct Probe {
    table: u16,
    /// Bits between the bucket's value and the query's substring.
    distance: u16,
    lo: u32,
    hi: u32,
}

/// Extracts `width` (1..=32) bits of `hash` starting at bit `start`.
#[inline]
fn substring(hash: &Hash256, start: u32, width: u32) -> u32 {
    let limbs = hash.limbs();
    let limb = (start / 64) as usize;
    let shift = start % 64;
    let mut v = limbs[limb] >> shift;
    if shift + width > 64 {
        v |= limbs[limb + 1] << (64 - shift);
    }
    (v & ((1u64 << width) - 1)) as u32
}

/// Asks the kernel to back `v`'s allocation with transparent huge pages.
///
/// A query touches thousands of random cache lines spread over hundreds of megabytes;
/// with 4 KiB pages nearly every one is also a TLB miss, and page walks (two-level under
/// virtualisation) cap how many misses the CPU overlaps. 2 MiB pages made queries at
/// 10M hashes about twice as fast on the development VM. Call it before the memory is
/// first touched. It is only a hint: where unsupported it does nothing.
pub(crate) fn advise_huge<T>(v: &Vec<T>) {
    #[cfg(target_os = "linux")]
    {
        const HUGE: usize = 2 << 20;
        let bytes = v.capacity() * std::mem::size_of::<T>();
        if bytes < 2 * HUGE {
            return;
        }
        let start = (v.as_ptr() as usize).next_multiple_of(HUGE);
        let end = (v.as_ptr() as usize + bytes) / HUGE * HUGE;
        if end > start {
            // SAFETY: the range lies inside `v`'s live allocation; MADV_HUGEPAGE changes
            // only how the kernel backs it, never its contents.
            #[allow(unsafe_code)]
            unsafe {
                libc::madvise(start as *mut libc::c_void, end - start, libc::MADV_HUGEPAGE);
            }
        }
    }
    #[cfg(not(target_os = "linux"))]
    let _ = v;
}

/// A zeroed vector on huge pages where available.
fn huge_zeroed<T: Copy + Default>(len: usize) -> Vec<T> {
    let mut v = Vec::with_capacity(len);
    advise_huge(&v);
    v.resize(len, T::default());
    v
}

/// Binomial coefficient for small arguments.
fn choose(n: u32, k: u32) -> f64 {
    (0..k).fold(1.0, |acc, i| acc * f64::from(n - i) / f64::from(i + 1))
}

/// Number of values within `r` bits of a `w`-bit value.
fn ball(w: u32, r: u32) -> f64 {
    (0..=r.min(w)).map(|k| choose(w, k)).sum()
}

/// Widths of `m` substrings covering 256 bits (the first `256 % m` are one bit wider).
fn widths(m: u32) -> Vec<u32> {
    (0..m).map(|i| 256 / m + u32::from(i < 256 % m)).collect()
}

/// Expected random memory accesses of one query at distance `d` with substrings `ws`
/// over `n` uniformly spread hashes.
fn query_cost(ws: &[u32], n: usize, d: u32) -> f64 {
    let r = d / ws.len() as u32;
    ws.iter()
        .map(|&w| {
            let probes = ball(w, r);
            probes * (1.0 + n as f64 / 2f64.powi(w as i32))
        })
        .sum()
}

/// Chooses the substring count for `n` hashes, or `None` for a flat (scan-only) index.
fn choose_substrings(n: usize) -> Option<u32> {
    if n < FLAT_BELOW {
        return None;
    }
    let mut best: Option<(f64, u32)> = None;
    for m in MIN_SUBSTRINGS..=MAX_SUBSTRINGS {
        let ws = widths(m);
        if ws[0] > MAX_WIDTH {
            continue;
        }
        let offsets: f64 = ws.iter().map(|&w| 2f64.powi(w as i32)).sum();
        // Offsets may not dominate memory, except at the 16x16-bit layout (4 MiB total).
        if m != 16 && offsets > 4.0 * n as f64 {
            continue;
        }
        let cost = query_cost(&ws, n, DESIGN_DISTANCE);
        if best.is_none_or(|(c, _)| cost < c) {
            best = Some((cost, m));
        }
    }
    best.map(|(_, m)| m)
}

/// Calls `f` with every `width`-bit value within `radius` bits of `value`.
fn for_each_in_ball(value: u32, width: u32, radius: u32, f: &mut impl FnMut(u32)) {
    fn flip(value: u32, from: u32, width: u32, left: u32, f: &mut impl FnMut(u32)) {
        if left == 0 {
            return;
        }
        for bit in from..width {
            let v = value ^ (1 << bit);
            f(v);
            flip(v, bit + 1, width, left - 1, f);
        }
    }
    f(value);
    flip(value, 0, width, radius, f);
}

/// Calls `f` with every `width`-bit value exactly `k` bits from `value`.
fn for_each_in_shell(value: u32, width: u32, k: u32, f: &mut impl FnMut(u32)) {
    fn flip(value: u32, from: u32, width: u32, left: u32, f: &mut impl FnMut(u32)) {
        if left == 0 {
            f(value);
            return;
        }
        for bit in from..=width - left {
            flip(value ^ (1 << bit), bit + 1, width, left - 1, f);
        }
    }
    if k <= width {
        flip(value, 0, width, k, f);
    }
}

impl MihIndex {
    /// Builds the index. Keys are opaque to the index and need not be unique.
    ///
    /// The tables are built on up to `threads` threads (one table per thread at a time).
    pub fn build(hashes: Vec<Hash256>, keys: Vec<u64>, threads: usize) -> Self {
        let m = choose_substrings(hashes.len());
        Self::build_with(hashes, keys, m, threads)
    }

    /// Builds the index with `substrings` tables (10..=32), or none for a scan-only
    /// index. [`MihIndex::build`] chooses this from the number of hashes; tests use this
    /// to exercise every layout on small sets.
    pub fn build_with(
        hashes: Vec<Hash256>,
        keys: Vec<u64>,
        substrings: Option<u32>,
        threads: usize,
    ) -> Self {
        assert_eq!(hashes.len(), keys.len(), "one key per hash");
        let keys = if keys.iter().enumerate().all(|(i, &k)| k == i as u64) {
            Vec::new()
        } else {
            keys
        };
        assert!(hashes.len() < u32::MAX as usize, "at most 2^32 - 1 hashes");
        let Some(m) = substrings else {
            return MihIndex {
                hashes: Store::Owned(hashes.into_iter().map(|h| Row(h.limbs())).collect()),
                keys: keys.into(),
                tables: Vec::new(),
            };
        };
        // Queries read the hashes at random: move them to huge pages (see `advise_huge`).
        let hashes = {
            let mut moved = Vec::with_capacity(hashes.len());
            advise_huge(&moved);
            moved.extend(hashes.into_iter().map(|h| Row(h.limbs())));
            moved
        };
        assert!(
            (MIN_SUBSTRINGS..=MAX_SUBSTRINGS).contains(&m),
            "10..=32 substrings"
        );
        let mut starts = Vec::new();
        let mut start = 0;
        for w in widths(m) {
            starts.push((start, w));
            start += w;
        }
        let threads = threads.clamp(1, starts.len());
        let chunk = starts.len().div_ceil(threads);
        let hashes_ref = &hashes;
        let mut tables: Vec<Table> = std::thread::scope(|scope| {
            let handles: Vec<_> = starts
                .chunks(chunk)
                .map(|part| {
                    scope.spawn(move || {
                        part.iter()
                            .map(|&(s, w)| Self::build_table(hashes_ref, s, w))
                            .collect::<Vec<_>>()
                    })
                })
                .collect();
            handles
                .into_iter()
                .flat_map(|h| h.join().expect("table build panicked"))
                .collect()
        });
        tables.sort_by_key(|t| t.start);
        MihIndex {
            hashes: hashes.into(),
            keys: keys.into(),
            tables,
        }
    }

    fn build_table(hashes: &[Row], start: u32, width: u32) -> Table {
        let buckets = 1usize << width;
        let values: Vec<u32> = hashes
            .iter()
            .map(|h| substring(&h.hash(), start, width))
            .collect();
        let mut offsets = huge_zeroed::<u32>(buckets + 1);
        for &v in &values {
            offsets[v as usize + 1] += 1;
        }
        for i in 0..buckets {
            offsets[i + 1] += offsets[i];
        }
        let mut fill = offsets.clone();
        let slot_width = Slots::width_for(hashes.len());
        let mut slot_bytes = huge_zeroed::<u8>(hashes.len() * slot_width + 1);
        for (slot, &v) in values.iter().enumerate() {
            let at = &mut fill[v as usize];
            Slots::set(&mut slot_bytes, slot_width, *at as usize, slot as u32);
            *at += 1;
        }
        let slots = Slots {
            width: slot_width,
            bytes: slot_bytes.into(),
        };
        let mean = hashes.len() as f64 / buckets as f64;
        let heavy_min = ((HEAVY_FACTOR * mean).ceil() as u32).max(HEAVY_MIN);
        let (mut heavy_lo, mut heavy_at, mut inline) = (Vec::new(), Vec::new(), Vec::new());
        // The substring covers bits start..start + width: keep the other half.
        let in_low = 128u32.saturating_sub(start).min(width);
        let half = usize::from(in_low * 2 >= width);
        for v in 0..buckets {
            let (lo, hi) = (offsets[v], offsets[v + 1]);
            if hi - lo >= heavy_min {
                heavy_lo.push(lo);
                heavy_at.push(inline.len() as u32);
                inline.extend((lo as usize..hi as usize).map(|i| {
                    let limbs = hashes[slots.get(i) as usize].0;
                    [limbs[half * 2], limbs[half * 2 + 1]]
                }));
            }
        }
        inline.shrink_to_fit();
        Table {
            start,
            width,
            offsets: offsets.into(),
            slots,
            heavy_min,
            heavy_lo: heavy_lo.into(),
            heavy_at: heavy_at.into(),
            inline: inline.into(),
            half,
        }
    }

    /// Number of stored hashes.
    pub fn len(&self) -> usize {
        self.hashes.len()
    }

    /// Whether the index holds no hashes.
    pub fn is_empty(&self) -> bool {
        self.hashes.is_empty()
    }

    /// Number of heavy buckets, over all tables (buckets whose hashes are also stored
    /// inline for a sequential scan).
    pub fn heavy_buckets(&self) -> usize {
        self.tables.iter().map(|t| t.heavy_lo.len()).sum()
    }

    /// Number of substring tables (0 for an index small enough to scan).
    pub fn substrings(&self) -> usize {
        self.tables.len()
    }

    /// The stored hashes and keys, in slot order.
    pub fn entries(&self) -> impl ExactSizeIterator<Item = (Hash256, u64)> + '_ {
        self.hashes
            .iter()
            .enumerate()
            .map(|(slot, h)| (h.hash(), self.key(slot as u32)))
    }

    /// Bytes of heap memory the index holds.
    pub fn heap_bytes(&self) -> usize {
        self.hashes.bytes()
            + self.keys.bytes()
            + self
                .tables
                .iter()
                .map(|t| {
                    t.offsets.bytes()
                        + t.slots.bytes.bytes()
                        + t.heavy_lo.bytes()
                        + t.heavy_at.bytes()
                        + t.inline.bytes()
                })
                .sum::<usize>()
    }

    /// Every stored hash within `max_distance` of `query`, as `(slot, distance)` pairs
    /// appended to `out` in ascending slot order. The slot is the position in
    /// [`MihIndex::entries`].
    pub fn query_slots(&self, query: &Hash256, max_distance: u32, out: &mut Vec<(u32, u32)>) {
        self.query_with(query, max_distance, Strategy::Auto, out);
    }

    /// [`MihIndex::query_slots`] with an explicit strategy. `Auto` scans when the tables
    /// would cost more memory accesses than a scan (tiny sets, or a distance so large
    /// that the probe radius explodes); the result is the same either way.
    pub fn query_with(
        &self,
        query: &Hash256,
        max_distance: u32,
        strategy: Strategy,
        out: &mut Vec<(u32, u32)>,
    ) {
        // A sequential scan costs far less per hash than a random access, so scan when
        // even the uniform expectation of the tables' accesses is near the set size.
        let strategy = match strategy {
            Strategy::Auto
                if self.tables.is_empty() || {
                    let ws: Vec<u32> = self.tables.iter().map(|t| t.width).collect();
                    query_cost(&ws, self.hashes.len(), max_distance) * 8.0
                        > self.hashes.len() as f64
                } =>
            {
                Strategy::Scan
            }
            other => other,
        };
        #[cfg(target_arch = "x86_64")]
        if std::arch::is_x86_feature_detected!("popcnt") {
            // SAFETY: the CPU supports POPCNT, checked just above.
            #[allow(unsafe_code)]
            unsafe {
                self.search_popcnt(query, max_distance, strategy, out)
            };
            return;
        }
        self.search(query, max_distance, strategy, out);
    }

    /// [`MihIndex::search`] compiled with the POPCNT instruction (the x86-64 baseline
    /// lacks it, and a software popcount makes verification several times slower).
    #[cfg(target_arch = "x86_64")]
    #[target_feature(enable = "popcnt")]
    fn search_popcnt(&self, q: &Hash256, d: u32, strategy: Strategy, out: &mut Vec<(u32, u32)>) {
        self.search(q, d, strategy, out);
    }

    #[inline(always)]
    fn search(
        &self,
        query: &Hash256,
        max_distance: u32,
        strategy: Strategy,
        out: &mut Vec<(u32, u32)>,
    ) {
        let done = strategy != Strategy::Scan
            && !self.tables.is_empty()
            && self.search_tables(query, max_distance, strategy == Strategy::Auto, out);
        if !done {
            for (slot, h) in self.hashes.iter().enumerate() {
                let d = h.hash().distance(query);
                if d <= max_distance {
                    out.push((slot as u32, d));
                }
            }
        }
    }

    /// The table search. Returns false, having done nothing, when `may_decline` and the
    /// tables would cost more than a scan.
    #[inline(always)]
    fn search_tables(
        &self,
        query: &Hash256,
        max_distance: u32,
        may_decline: bool,
        out: &mut Vec<(u32, u32)>,
    ) -> bool {
        // The work is split into passes over flat arrays (probe the offsets, gather the
        // slots, verify the hashes) so that each pass issues independent memory loads
        // that the CPU overlaps, instead of a chain of three dependent misses per bucket.
        let mut probes = Vec::new();
        let (radii, cost) = self.allocate_radii(query, max_distance, &mut probes);
        if may_decline && cost * 8.0 > self.hashes.len() as f64 {
            // Popular substrings everywhere: the tables would touch more memory at
            // random than a sequential scan reads.
            return false;
        }
        let start = out.len();
        let mut candidates: Vec<u32> = Vec::with_capacity(cost as usize);
        for p in &probes {
            if i32::from(p.distance) <= radii[p.table as usize] {
                let table = &self.tables[p.table as usize];
                let (lo, hi) = (p.lo as usize, p.hi as usize);
                if p.hi - p.lo < table.heavy_min {
                    table.slots.extend(lo, hi, &mut candidates);
                    continue;
                }
                // A heavy bucket: filter it by a sequential scan of its inline halves
                // (a hash within the distance is within it on either half), and verify
                // only what passes.
                let at = table
                    .heavy_lo
                    .binary_search(&p.lo)
                    .expect("every heavy bucket has an inline copy");
                let from = table.heavy_at[at] as usize;
                let inline = &table.inline[from..from + (hi - lo)];
                let q = query.limbs();
                let (qa, qb) = (q[table.half * 2], q[table.half * 2 + 1]);
                for (i, h) in inline.iter().enumerate() {
                    let d = (h[0] ^ qa).count_ones() + (h[1] ^ qb).count_ones();
                    if d <= max_distance {
                        candidates.push(table.slots.get(lo + i));
                    }
                }
            }
        }
        let hashes: &[Row] = &self.hashes;
        for &slot in &candidates {
            let d = hashes[slot as usize].hash().distance(query);
            if d <= max_distance {
                out.push((slot, d));
            }
        }
        out[start..].sort_unstable();
        let mut kept = start;
        for i in start..out.len() {
            if kept == start || out[i].0 != out[kept - 1].0 {
                out[kept] = out[i];
                kept += 1;
            }
        }
        out.truncate(kept);
        true
    }

    /// Chooses a probe radius per table for this query (-1: skip the table).
    ///
    /// Generalised pigeonhole (Qin, Wang, Xiao et al., "GPH: Similarity Search in
    /// Hamming Space", ICDE 2018): if the radii `t_j` satisfy `sum(t_j + 1) > d`, every
    /// hash within `d` has some substring `j` within `t_j` of the query's, so nothing is
    /// missed. The uniform choice `t_j = d / m` satisfies it, usually with little or no
    /// slack; this moves probing away from the tables where the query's buckets are
    /// largest (popular substrings in a skewed corpus) by a small dynamic program over
    /// the cost of each table at each radius. Up to the uniform radius the cost is the
    /// exact size of the buckets in the probe ball; one radius beyond it, where the ball
    /// is many times larger, it is estimated (values in the shell times the ball's mean
    /// cost per value, at least the uniform expectation: near a popular value the
    /// values a bit further out are popular too), and the shell is only enumerated for
    /// the tables that get it.
    /// So a query whose substrings are popular in a few tables skips those tables and
    /// widens a few others, whose buckets are near-empty.
    fn allocate_radii(&self, query: &Hash256, d: u32, probes: &mut Vec<Probe>) -> (Vec<i32>, f64) {
        let m = self.tables.len();
        let r = (d / m as u32) as usize;
        let wide = r + 1;
        let need = d as usize + 1;
        let n = self.hashes.len() as f64;
        // cost[j][t]: memory accesses of probing table j at radius t (cumulative).
        let mut cost = vec![vec![0f64; wide + 1]; m];
        let mut values = Vec::with_capacity(m);
        for (j, table) in self.tables.iter().enumerate() {
            let value = substring(query, table.start, table.width);
            values.push(value);
            let layer = &mut cost[j];
            for_each_in_ball(value, table.width, r as u32, &mut |v| {
                let k = (v ^ value).count_ones() as usize;
                layer[k] += table.probe(j, v, k, probes);
            });
            // Near a popular value the buckets a few bits further out are popular too:
            // expect a value in the shells to cost what one in the ball did, at least.
            let in_ball: f64 = layer.iter().take(r + 1).sum();
            let per_value = (in_ball / ball(table.width, r as u32))
                .max(1.0 + n / 2f64.powi(table.width as i32));
            for (t, cell) in layer.iter_mut().enumerate().skip(r + 1) {
                *cell = if t <= table.width as usize {
                    choose(table.width, t as u32) * per_value
                } else {
                    f64::INFINITY
                };
            }
            for t in 1..=wide {
                layer[t] += layer[t - 1];
            }
        }
        // best[j][b]: least cost over tables 0..j with sum(t + 1) = b (b capped at need);
        // how[j][b]: the (radius, previous b) that achieves it.
        let mut best = vec![vec![f64::INFINITY; need + 1]; m + 1];
        let mut how = vec![vec![(-1i32, 0usize); need + 1]; m + 1];
        best[0][0] = 0.0;
        for j in 0..m {
            for b in 0..=need {
                let here = best[j][b];
                if here.is_infinite() {
                    continue;
                }
                for t in -1..=wide as i32 {
                    let (gain, c) = match usize::try_from(t) {
                        Ok(t) => (t + 1, cost[j][t]),
                        Err(_) => (0, 0.0),
                    };
                    let nb = (b + gain).min(need);
                    if here + c < best[j + 1][nb] {
                        best[j + 1][nb] = here + c;
                        how[j + 1][nb] = (t, b);
                    }
                }
            }
        }
        debug_assert!(
            best[m][need].is_finite(),
            "uniform radii always satisfy the bound"
        );
        let mut radii = vec![-1i32; m];
        let mut b = need;
        for j in (0..m).rev() {
            let (t, prev) = how[j + 1][b];
            radii[j] = t;
            b = prev;
        }
        // The widened tables' outer shell: enumerate it now, and replace its estimate
        // with what it really holds.
        let mut total = 0.0;
        for (j, table) in self.tables.iter().enumerate() {
            let t = radii[j];
            if t < 0 {
                continue;
            }
            let t = t as usize;
            if t <= r {
                total += cost[j][t];
                continue;
            }
            total += cost[j][r];
            let value = values[j];
            for k in r + 1..=t {
                for_each_in_shell(value, table.width, k as u32, &mut |v| {
                    total += table.probe(j, v, k, probes);
                });
            }
        }
        (radii, total)
    }

    /// Every stored hash within `max_distance` of `query`, as key and distance, in slot
    /// order.
    pub fn query(&self, query: &Hash256, max_distance: u32) -> Vec<Hit> {
        let mut slots = Vec::new();
        self.query_slots(query, max_distance, &mut slots);
        slots
            .into_iter()
            .map(|(slot, distance)| Hit {
                key: self.key(slot),
                distance,
            })
            .collect()
    }

    /// The key stored at `slot`.
    pub fn key(&self, slot: u32) -> u64 {
        if self.keys.is_empty() {
            u64::from(slot)
        } else {
            self.keys[slot as usize]
        }
    }

    /// Writes the index to a snapshot body (read back by [`MihIndex::read_from`]).
    pub(crate) fn write_to<W: std::io::Write>(&self, w: &mut Writer<W>) -> std::io::Result<()> {
        w.array::<Row>(&self.hashes)?;
        w.array::<u64>(&self.keys)?;
        w.u32(self.tables.len() as u32)?;
        for t in &self.tables {
            w.u32(t.heavy_min)?;
            w.u8(t.half as u8)?;
            w.u8(t.slots.width as u8)?;
            w.array::<u32>(&t.offsets)?;
            w.array::<u8>(&t.slots.bytes)?;
            w.array::<u32>(&t.heavy_lo)?;
            w.array::<u32>(&t.heavy_at)?;
            w.array::<[u64; 2]>(&t.inline)?;
        }
        Ok(())
    }

    /// Reads an index written by [`MihIndex::write_to`], its arrays used in place, and
    /// checks everything a query relies on: the layout is one this build makes, every
    /// offsets array is ascending and ends at the hash count, every slot number is in
    /// range, and every heavy bucket (and nothing else) has its inline copy (on up to
    /// `threads` threads).
    pub(crate) fn read_from(r: &mut Reader, threads: usize) -> Result<MihIndex, FileError> {
        let hashes: Store<Row> = r.array()?;
        let n = hashes.len();
        if n >= u32::MAX as usize {
            return Err(invalid("more than 2^32 - 1 hashes"));
        }
        let keys: Store<u64> = r.array()?;
        if !keys.is_empty() && keys.len() != n {
            return Err(invalid("a key count differs from the hash count"));
        }
        let m = r.u32()?;
        if m != 0 && !(MIN_SUBSTRINGS..=MAX_SUBSTRINGS).contains(&m) {
            return Err(invalid(format!("{m} substring tables")));
        }
        let mut tables = Vec::with_capacity(m as usize);
        let mut start = 0;
        for width in if m == 0 { Vec::new() } else { widths(m) } {
            if width > MAX_WIDTH {
                return Err(invalid(format!("a {width}-bit substring")));
            }
            let heavy_min = r.u32()?;
            let half = r.u8()?;
            let slot_width = r.u8()?;
            let table = Table {
                start,
                width,
                offsets: r.array()?,
                slots: Slots {
                    width: usize::from(slot_width),
                    bytes: r.array()?,
                },
                heavy_min,
                heavy_lo: r.array()?,
                heavy_at: r.array()?,
                inline: r.array()?,
                half: usize::from(half),
            };
            if half > 1 || heavy_min == 0 || usize::from(slot_width) != Slots::width_for(n) {
                return Err(invalid("a table's parameters"));
            }
            tables.push(table);
            start += width;
        }
        // Each table's checks read all of it: spread the tables over the threads.
        let threads = threads.clamp(1, tables.len().max(1));
        let chunk = tables.len().div_ceil(threads).max(1);
        std::thread::scope(|s| {
            let checks: Vec<_> = tables
                .chunks(chunk)
                .map(|part| s.spawn(move || part.iter().try_for_each(|t| t.check(n))))
                .collect();
            checks
                .into_iter()
                .try_for_each(|c| c.join().expect("table check panicked"))
        })?;
        Ok(MihIndex {
            hashes,
            keys,
            tables,
        })
    }

    /// The largest key (`None` when empty).
    pub(crate) fn max_key(&self) -> Option<u64> {
        if self.keys.is_empty() {
            self.hashes.len().checked_sub(1).map(|k| k as u64)
        } else {
            self.keys.iter().copied().max()
        }
    }

    /// Every key, in slot order.
    pub(crate) fn keys(&self) -> impl Iterator<Item = u64> + '_ {
        (0..self.hashes.len() as u32).map(|slot| self.key(slot))
    }
}

impl Table {
    /// Checks a table read from a file against `n` hashes (see [`MihIndex::read_from`]).
    fn check(&self, n: usize) -> Result<(), FileError> {
        let offsets = &self.offsets[..];
        if offsets.len() != (1usize << self.width) + 1 || offsets[0] != 0 {
            return Err(invalid("an offsets array's length or start"));
        }
        if offsets[offsets.len() - 1] as usize != n {
            return Err(invalid("an offsets array does not end at the hash count"));
        }
        let mut heavy = 0usize;
        let mut inline = 0usize;
        for pair in offsets.windows(2) {
            let (lo, hi) = (pair[0], pair[1]);
            if hi < lo {
                return Err(invalid("an offsets array descends"));
            }
            if hi - lo >= self.heavy_min {
                if self.heavy_lo.get(heavy) != Some(&lo)
                    || self.heavy_at.get(heavy).map(|&a| a as usize) != Some(inline)
                {
                    return Err(invalid("a heavy bucket without its inline copy"));
                }
                heavy += 1;
                inline += (hi - lo) as usize;
            }
        }
        if heavy != self.heavy_lo.len()
            || heavy != self.heavy_at.len()
            || inline != self.inline.len()
        {
            return Err(invalid("inline copies of buckets that are not heavy"));
        }
        if self.slots.bytes.len() != n * self.slots.width + 1 {
            return Err(invalid("a slots array's length"));
        }
        let w = self.slots.width;
        let numbers = self.slots.bytes[..n * w].chunks_exact(w);
        let out_of_range = if w == 3 {
            numbers
                .map(|c| u32::from_le_bytes([c[0], c[1], c[2], 0]))
                .any(|s| s as usize >= n)
        } else {
            numbers
                .map(|c| u32::from_le_bytes([c[0], c[1], c[2], c[3]]))
                .any(|s| s as usize >= n)
        };
        if out_of_range {
            return Err(invalid("a slot number out of range"));
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn substring_crosses_limbs() {
        let h = Hash256::from_limbs([0xF000_0000_0000_0000, 0x0000_0000_0000_000F, 0, 0]);
        assert_eq!(substring(&h, 60, 8), 0xFF);
        assert_eq!(substring(&h, 56, 16), 0x0FF0);
        assert_eq!(substring(&h, 0, 32), 0);
        assert_eq!(substring(&h, 240, 16), 0);
    }

    /// The values `f` enumerates, sorted, checking that none comes twice.
    fn distinct(f: impl FnOnce(&mut dyn FnMut(u32))) -> Vec<u32> {
        let mut seen = Vec::new();
        f(&mut |v| seen.push(v));
        let n = seen.len();
        seen.sort_unstable();
        seen.dedup();
        assert_eq!(seen.len(), n, "a value enumerated twice");
        seen
    }

    #[test]
    fn ball_enumerates_each_value_once() {
        for radius in 0..=3 {
            let seen = distinct(|f| for_each_in_ball(0b1010_1010, 10, radius, &mut |v| f(v)));
            assert_eq!(seen.len() as f64, ball(10, radius));
            assert!(
                seen.iter()
                    .all(|v| (v ^ 0b1010_1010).count_ones() <= radius)
            );
        }
    }

    #[test]
    fn shell_enumerates_exactly_the_values_at_that_distance() {
        for k in 0..=4 {
            let seen = distinct(|f| for_each_in_shell(0b1100_1010, 10, k, &mut |v| f(v)));
            assert_eq!(seen.len() as f64, choose(10, k));
            assert!(seen.iter().all(|v| (v ^ 0b1100_1010).count_ones() == k));
            assert!(seen.iter().all(|&v| v < 1 << 10));
        }
        let mut none = 0;
        for_each_in_shell(0, 3, 4, &mut |_| none += 1);
        assert_eq!(none, 0);
    }

    #[test]
    fn keys_are_stored_only_when_they_are_not_the_slots() {
        let hashes: Vec<Hash256> = (0..3u64)
            .map(|i| Hash256::from_limbs([i, !i, i << 7, 0]))
            .collect();
        let identity = MihIndex::build_with(hashes.clone(), vec![0, 1, 2], Some(16), 1);
        let other = MihIndex::build_with(hashes.clone(), vec![7, 1 << 40, 2], Some(16), 1);
        assert_eq!(other.heap_bytes() - identity.heap_bytes(), 3 * 8);
        assert_eq!(
            identity.query(&hashes[1], 0),
            [Hit {
                key: 1,
                distance: 0
            }]
        );
        assert_eq!(
            other.query(&hashes[1], 0),
            [Hit {
                key: 1 << 40,
                distance: 0
            }]
        );
        assert_eq!(other.key(0), 7);
        let keys: Vec<u64> = identity.entries().map(|(_, k)| k).collect();
        assert_eq!(keys, [0, 1, 2]);
        let keys: Vec<u64> = other.entries().map(|(_, k)| k).collect();
        assert_eq!(keys, [7, 1 << 40, 2]);
    }

    /// A corpus with near-duplicates (heavy buckets) and spread hashes, from SplitMix64.
    fn clustered(n: usize) -> Vec<Hash256> {
        let mut state = 99u64;
        let mut next = move || {
            state = state.wrapping_add(0x9E37_79B9_7F4A_7C15);
            let mut z = state;
            z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
            z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
            z ^ (z >> 31)
        };
        let centre = [next(), next(), next(), next()];
        (0..n)
            .map(|i| {
                if i % 3 == 0 {
                    let mut l = centre;
                    // A few flipped bits: the copies share most substrings.
                    for _ in 0..next() % 6 {
                        let bit = next() % 256;
                        l[(bit / 64) as usize] ^= 1 << (bit % 64);
                    }
                    Hash256::from_limbs(l)
                } else {
                    Hash256::from_limbs([next(), next(), next(), next()])
                }
            })
            .collect()
    }

    fn write_index(index: &MihIndex, path: &std::path::Path) {
        crate::mapfile::write_file(path, b"", |w| index.write_to(w)).unwrap();
    }

    fn read_index(
        path: &std::path::Path,
        mode: crate::mapfile::LoadMode,
    ) -> Result<MihIndex, FileError> {
        let loaded = crate::mapfile::load(path, mode)?;
        MihIndex::read_from(&mut loaded.reader(), 2)
    }

    /// An index written to a file and read back (in place, both ways) answers every
    /// query exactly as the index it was written from, heavy buckets included, with
    /// and without stored keys.
    #[test]
    fn a_written_index_reads_back_and_answers_the_same() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("index");
        let hashes = clustered(12_000);
        for (layout, keys) in [
            (Some(16), (0..12_000u64).collect::<Vec<_>>()),
            (
                Some(12),
                (0..12_000u64).map(|k| k * 7 + (1 << 40)).collect(),
            ),
            (None, (0..12_000u64).collect()),
        ] {
            let index = MihIndex::build_with(hashes.clone(), keys, layout, 2);
            write_index(&index, &path);
            for mode in [
                crate::mapfile::LoadMode::Read,
                crate::mapfile::LoadMode::Map,
            ] {
                let read = read_index(&path, mode).unwrap();
                assert_eq!(read.substrings(), index.substrings());
                assert_eq!(read.heavy_buckets(), index.heavy_buckets());
                assert!(
                    layout.is_none() || read.heavy_buckets() > 0,
                    "heavy buckets exercised"
                );
                assert!(read.entries().eq(index.entries()));
                for (i, q) in hashes.iter().step_by(97).enumerate() {
                    let q = Hash256::from_limbs({
                        let mut l = q.limbs();
                        l[i % 4] ^= (i as u64) << 3;
                        l
                    });
                    for d in [0, 20, 31, 45] {
                        assert_eq!(
                            read.query(&q, d),
                            index.query(&q, d),
                            "{layout:?} {mode:?} {d}"
                        );
                    }
                }
            }
        }
    }

    /// What a file crafted to pass its checksum could hold that a query relies on:
    /// each is refused when the index is read.
    #[test]
    fn an_inconsistent_index_is_refused_when_read() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("index");
        let good = MihIndex::build_with(clustered(12_000), (0..12_000).collect(), Some(16), 1);
        assert!(
            !good.tables[0].heavy_lo.is_empty(),
            "table 0 has a heavy bucket"
        );
        let n = good.len() as u32;
        type Spoil = fn(&mut MihIndex, u32);
        let cases: [(&str, Spoil); 8] = [
            ("a slot number out of range", |ix, n| {
                let t = &mut ix.tables[3];
                let w = t.slots.width;
                Slots::set(t.slots.bytes.to_mut(), w, 100, n);
            }),
            ("an offsets array descends", |ix, _| {
                let o = ix.tables[1].offsets.to_mut();
                let at = o.len() / 2;
                o.swap(at - 50, at + 50);
            }),
            ("does not end at the hash count", |ix, n| {
                *ix.tables[2].offsets.to_mut().last_mut().unwrap() = n - 1;
            }),
            ("a heavy bucket without its inline copy", |ix, _| {
                ix.tables[0].heavy_lo.to_mut().pop();
                ix.tables[0].heavy_at.to_mut().pop();
            }),
            ("a heavy bucket without its inline copy", |ix, _| {
                ix.tables[0].heavy_at.to_mut()[0] += 1;
            }),
            ("inline copies of buckets that are not heavy", |ix, _| {
                ix.tables[0].inline.to_mut().push([0, 0]);
            }),
            ("a slots array's length", |ix, _| {
                ix.tables[5].slots.bytes.to_mut().pop();
            }),
            ("a key count differs", |ix, _| {
                ix.keys = Store::Owned(vec![1, 2, 3]);
            }),
        ];
        for (want, spoil) in cases {
            let mut bad = good.clone();
            spoil(&mut bad, n);
            write_index(&bad, &path);
            match read_index(&path, crate::mapfile::LoadMode::Read) {
                Err(FileError::Invalid(why)) => assert!(why.contains(want), "{want}: {why}"),
                Err(e) => panic!("{want}: {e}"),
                Ok(_) => panic!("{want}: accepted"),
            }
        }
        // The unspoilt one reads.
        write_index(&good, &path);
        read_index(&path, crate::mapfile::LoadMode::Read).unwrap();
    }

    #[test]
    fn slots_round_trip_in_three_and_four_bytes() {
        // Slot numbers for `count` hashes, with `values` at the first positions.
        let slots = |count: usize, values: &[u32]| {
            let width = Slots::width_for(count);
            let mut bytes = vec![0u8; count * width + 1];
            for (i, &v) in values.iter().enumerate() {
                Slots::set(&mut bytes, width, i, v);
            }
            // The last slot reads its padding byte, not past the end.
            Slots::set(&mut bytes, width, count - 1, 0x65_4321);
            Slots {
                width,
                bytes: bytes.into(),
            }
        };
        let values = [0, 0xFF_FFFF, 0x12_3456, 1, 0xAB_CDEF];
        let three = slots(1 << 24, &values);
        assert_eq!(three.width, 3);
        let four = slots(
            (1 << 24) + 1,
            &[0, 0xFF_FFFF, 0x12_3456, 1, 0xAB_CDEF, 1 << 24],
        );
        assert_eq!(four.width, 4);
        let want = [0, 0xFF_FFFF, 0x12_3456, 1, 0xAB_CDEF];
        let mut got = Vec::new();
        three.extend(0, 5, &mut got);
        assert_eq!(got, want);
        got.clear();
        four.extend(0, 6, &mut got);
        assert_eq!(got[..5], want);
        assert_eq!(got[5], 1 << 24);
        assert_eq!(three.get((1 << 24) - 1), 0x65_4321);
        assert_eq!(four.get(1 << 24), 0x65_4321);
    }

    #[test]
    fn layout_choice() {
        assert_eq!(choose_substrings(1000), None);
        assert_eq!(choose_substrings(1_000_000), Some(16));
        let m = choose_substrings(10_000_000).unwrap();
        assert!((11..=13).contains(&m), "{m}");
        for m in MIN_SUBSTRINGS..=MAX_SUBSTRINGS {
            assert_eq!(widths(m).iter().sum::<u32>(), 256);
        }
    }
}

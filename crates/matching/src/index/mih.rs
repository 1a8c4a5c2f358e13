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
    offsets: Vec<u32>,
    /// Slot numbers, grouped by substring value.
    slots: Slots,
    /// Buckets at least this large are heavy.
    heavy_min: u32,
    /// Where each heavy bucket starts in `slots`, ascending.
    heavy_lo: Vec<u32>,
    /// Where the same bucket starts in `inline`.
    heavy_at: Vec<u32>,
    /// Half of each hash in every heavy bucket, in the same order as in `slots`: the
    /// 128 bits (limbs `half * 2` and `half * 2 + 1`) that hold less of this table's
    /// substring, so that they tell the bucket's hashes apart.
    inline: Vec<[u64; 2]>,
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
    bytes: Vec<u8>,
}

impl Slots {
    fn new(count: usize) -> Slots {
        let width = if count <= 1 << 24 { 3 } else { 4 };
        Slots {
            width,
            bytes: huge_zeroed::<u8>(count * width + 1),
        }
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

    fn set(&mut self, i: usize, slot: u32) {
        let at = i * self.width;
        self.bytes[at..at + self.width].copy_from_slice(&slot.to_le_bytes()[..self.width]);
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
        let (lo, hi) = (
            self.offsets[value as usize],
            self.offsets[value as usize + 1],
        );
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
#[repr(align(32))]
struct Row(Hash256);

/// An immutable, exact Hamming-range index over 256-bit hashes, each with a `u64` key.
#[derive(Debug, Clone, Default)]
pub struct MihIndex {
    hashes: Vec<Row>,
    /// The key of each slot; empty when every key equals its slot (the common case of
    /// an index built over a table's rows, where storing them would cost 8 bytes a hash).
    keys: Vec<u64>,
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
fn advise_huge<T>(v: &Vec<T>) {
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
                hashes: hashes.into_iter().map(Row).collect(),
                keys,
                tables: Vec::new(),
            };
        };
        // Queries read the hashes at random: move them to huge pages (see `advise_huge`).
        let hashes = {
            let mut moved = Vec::with_capacity(hashes.len());
            advise_huge(&moved);
            moved.extend(hashes.into_iter().map(Row));
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
            hashes,
            keys,
            tables,
        }
    }

    fn build_table(hashes: &[Row], start: u32, width: u32) -> Table {
        let buckets = 1usize << width;
        let values: Vec<u32> = hashes
            .iter()
            .map(|h| substring(&h.0, start, width))
            .collect();
        let mut offsets = huge_zeroed::<u32>(buckets + 1);
        for &v in &values {
            offsets[v as usize + 1] += 1;
        }
        for i in 0..buckets {
            offsets[i + 1] += offsets[i];
        }
        let mut fill = offsets.clone();
        let mut slots = Slots::new(hashes.len());
        for (slot, &v) in values.iter().enumerate() {
            let at = &mut fill[v as usize];
            slots.set(*at as usize, slot as u32);
            *at += 1;
        }
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
                    let limbs = hashes[slots.get(i) as usize].0.limbs();
                    [limbs[half * 2], limbs[half * 2 + 1]]
                }));
            }
        }
        inline.shrink_to_fit();
        Table {
            start,
            width,
            offsets,
            slots,
            heavy_min,
            heavy_lo,
            heavy_at,
            inline,
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
            .map(|(slot, h)| (h.0, self.key(slot as u32)))
    }

    /// Bytes of heap memory the index holds.
    pub fn heap_bytes(&self) -> usize {
        self.hashes.capacity() * 32
            + self.keys.capacity() * 8
            + self
                .tables
                .iter()
                .map(|t| {
                    t.offsets.capacity() * 4
                        + t.slots.bytes.capacity()
                        + (t.heavy_lo.capacity() + t.heavy_at.capacity()) * 4
                        + t.inline.capacity() * 16
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
                let d = h.0.distance(query);
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
        for &slot in &candidates {
            let d = self.hashes[slot as usize].0.distance(query);
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

    #[test]
    fn slots_round_trip_in_three_and_four_bytes() {
        let mut three = Slots::new(1 << 24);
        assert_eq!(three.width, 3);
        let mut four = Slots::new((1 << 24) + 1);
        assert_eq!(four.width, 4);
        for (i, v) in [
            (0, 0),
            (1, 0xFF_FFFF),
            (2, 0x12_3456),
            (3, 1),
            (4, 0xAB_CDEF),
        ] {
            three.set(i, v);
            four.set(i, v);
        }
        four.set(5, 1 << 24);
        let want = [0, 0xFF_FFFF, 0x12_3456, 1, 0xAB_CDEF];
        let mut got = Vec::new();
        three.extend(0, 5, &mut got);
        assert_eq!(got, want);
        got.clear();
        four.extend(0, 6, &mut got);
        assert_eq!(got[..5], want);
        assert_eq!(got[5], 1 << 24);
        // The last slot reads its padding byte, not past the end.
        three.set((1 << 24) - 1, 0x65_4321);
        assert_eq!(three.get((1 << 24) - 1), 0x65_4321);
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

//! The index answers exactly what a linear scan answers, for every layout, on uniform,
//! clustered and real-corpus hashes, and through live additions, deletions and
//! compactions.

use std::path::PathBuf;

use firebreak_hashing::Hash256;
use firebreak_matching::index::{LiveIndex, MihIndex, Strategy as Search};
use proptest::prelude::*;

mod common;
use common::Rng;

/// Uniform random hashes.
fn uniform(rng: &mut Rng, n: usize) -> Vec<Hash256> {
    (0..n).map(|_| rng.hash()).collect()
}

/// Clusters of near-duplicates (re-uploads), all sharing a few popular 16-bit words.
fn clustered(rng: &mut Rng, n: usize) -> Vec<Hash256> {
    let popular: Vec<u64> = (0..4).map(|_| rng.next() & 0xFFFF).collect();
    let centres: Vec<Hash256> = (0..(n / 20).max(1))
        .map(|_| {
            let mut limbs = [rng.next(), rng.next(), rng.next(), rng.next()];
            // Half of the centres start with a popular word: skewed buckets.
            if rng.below(2) == 0 {
                limbs[0] = (limbs[0] & !0xFFFF) | popular[rng.below(4) as usize];
            }
            Hash256::from_limbs(limbs)
        })
        .collect();
    (0..n)
        .map(|_| {
            let c = centres[rng.below(centres.len() as u64) as usize];
            let flips = rng.below(41) as u32;
            rng.near(&c, flips)
        })
        .collect()
}

/// Queries: near copies of stored hashes at distances around the threshold, and noise.
fn queries(rng: &mut Rng, stored: &[Hash256], count: usize) -> Vec<Hash256> {
    (0..count)
        .map(|i| {
            if i % 4 == 3 || stored.is_empty() {
                rng.hash()
            } else {
                let s = stored[rng.below(stored.len() as u64) as usize];
                let flips = rng.below(48) as u32;
                rng.near(&s, flips)
            }
        })
        .collect()
}

fn scan(stored: &[Hash256], q: &Hash256, d: u32) -> Vec<(u32, u32)> {
    stored
        .iter()
        .enumerate()
        .filter_map(|(i, h)| {
            let dist = h.distance(q);
            (dist <= d).then_some((i as u32, dist))
        })
        .collect()
}

fn check_layouts(stored: &[Hash256], qs: &[Hash256], layouts: &[Option<u32>]) {
    let keys: Vec<u64> = (0..stored.len() as u64).collect();
    for &layout in layouts {
        let index = MihIndex::build_with(stored.to_vec(), keys.clone(), layout, 2);
        for q in qs {
            for d in [0, 1, 15, 31, 32, 47] {
                let mut got = Vec::new();
                index.query_with(q, d, Search::Tables, &mut got);
                assert_eq!(got, scan(stored, q, d), "layout {layout:?} distance {d}");
                let mut auto = Vec::new();
                index.query_slots(q, d, &mut auto);
                assert_eq!(auto, got, "auto strategy, layout {layout:?} distance {d}");
            }
        }
    }
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 12, rng_seed: proptest::test_runner::RngSeed::Fixed(4), ..ProptestConfig::default() })]

    #[test]
    fn uniform_equals_scan(seed in any::<u64>(), n in 0usize..3000, m in 12u32..=32) {
        let mut rng = Rng(seed);
        let stored = uniform(&mut rng, n);
        let qs = queries(&mut rng, &stored, 24);
        check_layouts(&stored, &qs, &[Some(m), Some(16), None]);
    }

    #[test]
    fn clustered_equals_scan(seed in any::<u64>(), n in 1usize..3000, m in 12u32..=32) {
        let mut rng = Rng(seed);
        let stored = clustered(&mut rng, n);
        let qs = queries(&mut rng, &stored, 24);
        check_layouts(&stored, &qs, &[Some(m), Some(12)]);
    }
}

/// The automatic layout (tables chosen by size) at a size where tables are used.
#[test]
fn automatic_layout_equals_scan_at_scale() {
    let mut rng = Rng(99);
    let stored = clustered(&mut rng, 60_000);
    let index = MihIndex::build(stored.clone(), (0..stored.len() as u64).collect(), 2);
    assert!(index.substrings() > 0, "60k hashes should get tables");
    // Half the centres share four popular words: their buckets are scanned inline.
    assert!(
        index.heavy_buckets() > 0,
        "the popular words should make heavy buckets"
    );
    for q in queries(&mut rng, &stored, 200) {
        let mut got = Vec::new();
        index.query_with(&q, 31, Search::Tables, &mut got);
        assert_eq!(got, scan(&stored, &q, 31));
    }
}

/// A corpus dominated by one video's near-duplicate frames: every table's bucket near
/// the query is heavy, so the answer must come from the heavy buckets' inline copies.
#[test]
fn near_duplicates_in_every_table_are_answered_from_heavy_buckets() {
    let mut rng = Rng(5);
    let centre = rng.hash();
    let mut stored: Vec<Hash256> = (0..4000)
        .map(|i| {
            // Most copies differ in a few bits (so they share whole substrings and fill
            // the same buckets); some are spread out to sit around the threshold.
            let flips = if i % 4 == 0 {
                rng.below(40)
            } else {
                rng.below(6)
            };
            rng.near(&centre, flips as u32)
        })
        .collect();
    stored.extend(uniform(&mut rng, 12_000));
    let keys: Vec<u64> = (0..stored.len() as u64).collect();
    for layout in [Some(12), Some(16), Some(24), Some(32)] {
        let index = MihIndex::build_with(stored.clone(), keys.clone(), layout, 2);
        assert!(
            index.heavy_buckets() >= 12,
            "layout {layout:?}: heavy buckets expected"
        );
        for flips in [0, 2, 9, 20] {
            let q = rng.near(&centre, flips);
            for d in [0, 15, 31] {
                let mut got = Vec::new();
                index.query_with(&q, d, Search::Tables, &mut got);
                let want = scan(&stored, &q, d);
                assert_eq!(got, want, "layout {layout:?} flips {flips} distance {d}");
            }
        }
        // Not vacuous: at distance 31 the near copies are found.
        let mut got = Vec::new();
        index.query_with(&centre, 31, Search::Tables, &mut got);
        assert!(got.len() > 3000, "layout {layout:?}: {} hits", got.len());
    }
}

fn corpus(name: &str) -> Vec<Hash256> {
    let path = PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .join("../../../shared/conformance/pdq/hash-lists")
        .join(name);
    let text = std::fs::read_to_string(&path).unwrap_or_else(|e| panic!("{path:?}: {e}"));
    text.lines()
        .filter(|l| !l.trim().is_empty())
        .map(|l| Hash256::from_hex(l.trim()).unwrap())
        .collect()
}

/// Meta's regression corpora (haystack and needles of real PDQ hashes), every layout.
#[test]
fn reference_corpora_equal_scan() {
    let mut stored = corpus("haystack.txt");
    stored.extend(corpus("long256.dat"));
    stored.extend(corpus("short256.dat"));
    let mut qs = corpus("needles.txt");
    qs.extend(stored.iter().step_by(37).copied());
    let layouts: Vec<Option<u32>> = (12..=32).map(Some).chain([None]).collect();
    check_layouts(&stored, &qs, &layouts);
    // The needles are there to be found: make sure the test is not vacuous.
    let found: usize = corpus("needles.txt")
        .iter()
        .map(|q| scan(&stored, q, 31).len())
        .sum();
    assert!(found > 0);
}

#[derive(Debug, Clone)]
enum Op {
    Add(u8),
    Remove(u8),
    Compact,
}

fn op() -> impl Strategy<Value = Op> {
    prop_oneof![
        4 => (1u8..50).prop_map(Op::Add),
        2 => (1u8..20).prop_map(Op::Remove),
        1 => Just(Op::Compact),
    ]
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 24, rng_seed: proptest::test_runner::RngSeed::Fixed(5), ..ProptestConfig::default() })]

    /// Any sequence of additions, deletions and compactions: queries equal a scan over
    /// the live entries of a plain model.
    #[test]
    fn live_index_equals_model(seed in any::<u64>(), ops in proptest::collection::vec(op(), 1..30)) {
        let mut rng = Rng(seed);
        let initial = clustered(&mut rng, 200);
        let mut model: Vec<(Hash256, u64)> =
            initial.iter().copied().zip(0u64..).collect();
        let mut next_key = model.len() as u64;
        let index = LiveIndex::new(model.clone(), 1);
        for op in ops {
            match op {
                Op::Add(n) => {
                    let new: Vec<(Hash256, u64)> = (0..n)
                        .map(|_| {
                            let base = model.get(rng.below(model.len().max(1) as u64) as usize)
                                .map(|e| e.0).unwrap_or_else(|| rng.hash());
                            let flips = rng.below(40) as u32;
                            let h = rng.near(&base, flips);
                            next_key += 1;
                            (h, next_key)
                        })
                        .collect();
                    index.add(&new);
                    model.extend(new);
                }
                Op::Remove(n) => {
                    let mut keys = Vec::new();
                    for _ in 0..n {
                        if model.is_empty() { break; }
                        let at = rng.below(model.len() as u64) as usize;
                        keys.push(model.swap_remove(at).1);
                    }
                    index.remove(&keys);
                }
                Op::Compact => index.compact(),
            }
            prop_assert_eq!(index.len(), model.len());
            let stored: Vec<Hash256> = model.iter().map(|e| e.0).collect();
            for q in queries(&mut rng, &stored, 6) {
                let mut got: Vec<(u64, u32)> =
                    index.query(&q, 31).into_iter().map(|h| (h.key, h.distance)).collect();
                got.sort_unstable();
                let mut want: Vec<(u64, u32)> = model
                    .iter()
                    .filter(|(h, _)| h.distance(&q) <= 31)
                    .map(|(h, k)| (*k, h.distance(&q)))
                    .collect();
                want.sort_unstable();
                prop_assert_eq!(got, want);
            }
        }
    }
}

/// A reader thread querying in a loop sees an addition as soon as the writer's `add`
/// returns, and sees a deletion as soon as `remove` returns, while a compaction runs
/// concurrently.
#[test]
fn additions_visible_to_concurrent_readers() {
    let mut rng = Rng(7);
    let base = uniform(&mut rng, 20_000);
    let index = LiveIndex::new(base.iter().copied().zip(0u64..).collect(), 1);
    let fresh: Vec<Hash256> = uniform(&mut rng, 50);
    let (tx, rx) = std::sync::mpsc::channel::<(usize, bool)>();
    let (ack_tx, ack_rx) = std::sync::mpsc::channel::<()>();
    std::thread::scope(|s| {
        let reader = s.spawn(|| {
            for (i, present) in rx {
                let hits = index.query(&fresh[i], 0);
                let found = hits.iter().any(|h| h.key == 1_000_000 + i as u64);
                assert_eq!(found, present, "entry {i}, expected present={present}");
                ack_tx.send(()).unwrap();
            }
        });
        let compactor = s.spawn(|| index.compact());
        for (i, h) in fresh.iter().enumerate() {
            index.add(&[(*h, 1_000_000 + i as u64)]);
            tx.send((i, true)).unwrap();
            ack_rx.recv().unwrap();
            if i % 2 == 0 {
                index.remove(&[1_000_000 + i as u64]);
                tx.send((i, false)).unwrap();
                ack_rx.recv().unwrap();
            }
        }
        drop(tx);
        compactor.join().unwrap();
        reader.join().unwrap();
    });
    assert_eq!(index.len(), 20_000 + 25);
    index.compact();
    assert_eq!(index.len(), 20_000 + 25);
    assert_eq!(index.snapshot().delta_len(), 0);
}

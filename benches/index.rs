//! Exact PDQ index: query latency at distance 31 on 1M clustered hashes (tables) and
//! the same queries by linear scan, plus a live-window frame push. The 10M comparison
//! with FAISS is `benches/index_compare.sh`.

use criterion::{Criterion, criterion_group, criterion_main};
use firebreak_hashing::Hash256;
use firebreak_matching::index::{MihIndex, Strategy};
use firebreak_matching::window::{VpdqWindow, WindowConfig};

/// splitmix64.
fn next(state: &mut u64) -> u64 {
    *state = state.wrapping_add(0x9E37_79B9_7F4A_7C15);
    let mut z = *state;
    z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
    z ^ (z >> 31)
}

/// `n` hashes in clusters of ten near-duplicates (0-40 bits from their centre).
fn clustered(n: usize, state: &mut u64) -> Vec<Hash256> {
    let mut out = Vec::with_capacity(n);
    while out.len() < n {
        let centre = [next(state), next(state), next(state), next(state)];
        for _ in 0..10 {
            let mut l = centre;
            for _ in 0..next(state) % 41 {
                let b = next(state) % 256;
                l[(b / 64) as usize] ^= 1 << (b % 64);
            }
            out.push(Hash256::from_limbs(l));
        }
    }
    out.truncate(n);
    out
}

fn index(c: &mut Criterion) {
    let mut state = 7;
    let stored = clustered(1_000_000, &mut state);
    let queries: Vec<Hash256> = (0..256)
        .map(|i| {
            let mut l = stored[(next(&mut state) % stored.len() as u64) as usize].limbs();
            for _ in 0..i % 40 {
                let b = next(&mut state) % 256;
                l[(b / 64) as usize] ^= 1 << (b % 64);
            }
            Hash256::from_limbs(l)
        })
        .collect();
    let index = MihIndex::build(stored, (0..1_000_000).collect(), 2);
    let mut group = c.benchmark_group("index_1m");
    let mut out = Vec::new();
    let mut i = 0;
    group.bench_function("query_d31", |b| {
        b.iter(|| {
            out.clear();
            index.query_slots(&queries[i % queries.len()], 31, &mut out);
            i += 1;
        })
    });
    group.sample_size(10);
    group.bench_function("scan_d31", |b| {
        b.iter(|| {
            out.clear();
            index.query_with(&queries[i % queries.len()], 31, Strategy::Scan, &mut out);
            i += 1;
        })
    });
    group.finish();

    let mut window = VpdqWindow::new(WindowConfig::default());
    let mut t = 0.0;
    c.bench_function("window_push", |b| {
        b.iter(|| {
            t += 0.5;
            let q = &queries[(t as usize) % queries.len()];
            window.push(t, *q, 100, |h| {
                let mut hits = Vec::new();
                index.query_slots(h, 31, &mut hits);
                hits.iter().map(|&(slot, _)| slot / 10).collect()
            })
        })
    });
}

criterion_group!(benches, index);
criterion_main!(benches);

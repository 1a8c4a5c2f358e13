//! Builds the exact PDQ index over a file of raw hashes and times range queries, for the
//! side-by-side comparison with FAISS in `benches/index_compare.sh`.
//!
//! Input files hold 32 bytes per hash in hex order (`bytes.fromhex(hex)`). The truth
//! file (from FAISS's flat index) has one line per query: the sorted row numbers within
//! the distance. Prints one JSON object.

#![forbid(unsafe_code)]

use std::time::Instant;

use firebreak_hashing::Hash256;
use firebreak_matching::index::{MihIndex, Strategy};

fn read_hashes(path: &str) -> Vec<Hash256> {
    let bytes = std::fs::read(path).unwrap_or_else(|e| panic!("{path}: {e}"));
    assert_eq!(
        bytes.len() % 32,
        0,
        "{path}: not a whole number of 32-byte hashes"
    );
    bytes
        .chunks_exact(32)
        .map(|c| Hash256::from_bytes(c.try_into().unwrap()))
        .collect()
}

fn rss_bytes() -> usize {
    let status = std::fs::read_to_string("/proc/self/status").unwrap_or_default();
    status
        .lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse::<usize>().ok())
        .map_or(0, |kb| kb * 1024)
}

fn percentile(sorted: &[f64], p: f64) -> f64 {
    let i = ((sorted.len() as f64 - 1.0) * p).round() as usize;
    sorted[i]
}

fn main() {
    let args: Vec<String> = std::env::args().collect();
    let get = |flag: &str| {
        args.iter()
            .position(|a| a == flag)
            .and_then(|i| args.get(i + 1))
            .cloned()
    };
    let hashes_path = get("--hashes").expect("--hashes FILE");
    let queries_path = get("--queries").expect("--queries FILE");
    let truth_path = get("--truth");
    let distance: u32 = get("--distance").map_or(31, |d| d.parse().expect("--distance N"));
    let threads: usize = get("--threads").map_or(2, |t| t.parse().expect("--threads N"));
    let scan_queries: usize = get("--scan-queries").map_or(20, |t| t.parse().expect("N"));

    let hashes = read_hashes(&hashes_path);
    let queries = read_hashes(&queries_path);
    let n = hashes.len();
    let rss_before = rss_bytes();
    let keys: Vec<u64> = (0..n as u64).collect();
    let started = Instant::now();
    let index = match get("--substrings") {
        Some(m) => MihIndex::build_with(hashes, keys, Some(m.parse().expect("M")), threads),
        None => MihIndex::build(hashes, keys, threads),
    };
    let build_seconds = started.elapsed().as_secs_f64();
    // The input vectors moved into the index, so the RSS delta is the tables (the hashes
    // and keys were resident before); report the index's own accounting too.
    let rss_after = rss_bytes();

    let mut latencies = Vec::with_capacity(queries.len());
    let mut results = Vec::with_capacity(queries.len());
    let mut out = Vec::new();
    for q in &queries {
        out.clear();
        let t = Instant::now();
        index.query_slots(q, distance, &mut out);
        latencies.push(t.elapsed().as_secs_f64() * 1e6);
        results.push(out.iter().map(|&(slot, _)| slot).collect::<Vec<u32>>());
    }
    if let Some(path) = get("--latencies") {
        let text: String = latencies.iter().map(|l| format!("{l:.1}\n")).collect();
        std::fs::write(&path, text).unwrap_or_else(|e| panic!("{path}: {e}"));
    }
    let mut sorted = latencies.clone();
    sorted.sort_by(f64::total_cmp);

    let mut scan_lat = Vec::new();
    for q in queries.iter().take(scan_queries) {
        out.clear();
        let t = Instant::now();
        index.query_with(q, distance, Strategy::Scan, &mut out);
        scan_lat.push(t.elapsed().as_secs_f64() * 1e6);
    }
    scan_lat.sort_by(f64::total_cmp);

    let (mut true_pairs, mut found_pairs, mut extra_pairs) = (0usize, 0usize, 0usize);
    if let Some(path) = &truth_path {
        let text = std::fs::read_to_string(path).unwrap_or_else(|e| panic!("{path}: {e}"));
        for (line, got) in text.lines().zip(&results) {
            let want: Vec<u32> = line
                .split_whitespace()
                .map(|t| t.parse().expect("row number"))
                .collect();
            true_pairs += want.len();
            found_pairs += want.iter().filter(|w| got.binary_search(w).is_ok()).count();
            extra_pairs += got
                .iter()
                .filter(|g| want.binary_search(g).is_err())
                .count();
        }
    }
    let recall = if true_pairs == 0 {
        1.0
    } else {
        found_pairs as f64 / true_pairs as f64
    };
    let mean_results = results.iter().map(Vec::len).sum::<usize>() as f64 / results.len() as f64;
    println!(
        "{{\"n\": {n}, \"queries\": {}, \"distance\": {distance}, \"substrings\": {}, \
         \"build_seconds\": {build_seconds:.3}, \"query_p50_us\": {:.1}, \
         \"query_p99_us\": {:.1}, \"query_mean_us\": {:.1}, \"scan_p50_us\": {:.1}, \
         \"recall\": {recall:.6}, \"true_pairs\": {true_pairs}, \"extra_pairs\": {extra_pairs}, \
         \"mean_results\": {mean_results:.2}, \"bytes_per_hash\": {:.1}, \
         \"rss_delta_bytes_per_hash\": {:.1}}}",
        queries.len(),
        index.substrings(),
        percentile(&sorted, 0.5),
        percentile(&sorted, 0.99),
        latencies.iter().sum::<f64>() / latencies.len() as f64,
        if scan_lat.is_empty() {
            0.0
        } else {
            percentile(&scan_lat, 0.5)
        },
        index.heap_bytes() as f64 / n as f64,
        rss_after.saturating_sub(rss_before) as f64 / n as f64,
    );
}

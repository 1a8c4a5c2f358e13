//! `pdq_throughput RAW_RGB WIDTH HEIGHT ITERATIONS`: hashes a raw RGB24 file once, then
//! times ITERATIONS hashes on one thread. Prints `hash_hex,quality,seconds_per_hash`.
//! Used by `compare_reference.py` to measure Firebreak and the reference on the same pixels.

#![forbid(unsafe_code)]

use std::time::Instant;

use firebreak_hashing::{ImageView, PdqHasher, PixelFormat};

fn main() {
    let args: Vec<String> = std::env::args().collect();
    assert_eq!(
        args.len(),
        5,
        "usage: pdq_throughput RAW_RGB WIDTH HEIGHT ITERATIONS"
    );
    let px = std::fs::read(&args[1]).expect("read raw RGB");
    let (w, h, n): (usize, usize, u32) = (
        args[2].parse().unwrap(),
        args[3].parse().unwrap(),
        args[4].parse().unwrap(),
    );
    let img = ImageView::packed(&px, w, h, PixelFormat::Rgb8).expect("buffer matches size");
    let mut hasher = PdqHasher::new();
    let first = hasher.hash(&img);
    let start = Instant::now();
    for _ in 0..n {
        std::hint::black_box(hasher.hash(std::hint::black_box(&img)));
    }
    let per = start.elapsed().as_secs_f64() / n as f64;
    println!("{},{},{per:.9}", first.hash, first.quality);
}

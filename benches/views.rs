//! Detector cost per sampled 720p frame (decode excluded), without and with the
//! robustness levers, in the same run: the whole-frame PDQ hash and one bank lookup
//! (today's path) against the views (the eight dihedral transforms of the whole
//! frame; bars found and the frame without them; the centre 60 % view, both from
//! half-resolution luma) and one lookup per view hash, against a bank of 100,000
//! random hashes. The frame has pillarbox bars, so every view is hashed (the worst
//! case). `levers_masked` adds the masked corners (four DCTs of the trimmed view's
//! downsample, eight more lookups): the default query views. The bound: at
//! most 2.0x.

use criterion::{Criterion, Throughput, criterion_group, criterion_main};
use firebreak_benches::synthetic_rgb;
use firebreak_hashing::views::{Corner, ViewSpec, content_rect, hash_views};
use firebreak_hashing::{Hash256, ImageView, PdqHasher, PixelFormat};
use firebreak_matching::bank::{Bank, ImportPolicy};
use firebreak_matching::lists::{Record, Signal};
use firebreak_matching::matcher::{MatchConfig, Matcher};

fn bank(n: usize) -> Bank {
    let mut state = 0x9e37_79b9_7f4a_7c15u64;
    let mut next = || {
        state ^= state << 13;
        state ^= state >> 7;
        state ^= state << 17;
        state
    };
    let records = (0..n)
        .map(|i| Record {
            line: i + 1,
            id: Some(format!("v{i}")),
            signal: Signal::Pdq {
                hash: Hash256::from_limbs([next(), next(), next(), next()]),
                quality: Some(100),
            },
            labels: Vec::new(),
            delete: false,
        })
        .collect();
    let mut b = Bank::new("crisis", false);
    b.import(records, Vec::new(), ImportPolicy::default());
    b
}

fn views(c: &mut Criterion) {
    let bank = bank(100_000);
    let matcher = Matcher::new([&bank], MatchConfig::default(), 1);
    let (w, h) = (1280usize, 720usize);
    // A 16:9 frame with pillarbox bars (4:3 content), so the trimmed view is hashed too.
    let mut px = synthetic_rgb(w, h, 1);
    for y in 0..h {
        for x in (0..160).chain(w - 160..w) {
            px[(y * w + x) * 3..(y * w + x) * 3 + 3].fill(0);
        }
    }
    let img = ImageView::packed(&px, w, h, PixelFormat::Rgb8).unwrap();
    let mut hasher = PdqHasher::new();
    let levers = ViewSpec {
        trim_bars: true,
        centres: vec![60],
        corners: Vec::new(),
        dihedral: true,
        masks: Vec::new(),
    };
    // Today's default query views: the levers plus the four masked corners of 50 %
    // (each as it is and mirrored).
    let masked = ViewSpec {
        masks: Corner::ALL.map(|c| (100, c, 50)).to_vec(),
        ..levers.clone()
    };
    let mut group = c.benchmark_group("detect_frame_720p");
    group.throughput(Throughput::Elements(1));
    group.bench_function("plain", |b| {
        b.iter(|| {
            let p = hasher.hash(&img);
            matcher.match_pdq(&p.hash)
        })
    });
    group.bench_function("levers", |b| {
        b.iter(|| {
            let v = hash_views(&mut hasher, &img, &levers);
            v.iter()
                .map(|v| matcher.match_pdq(&v.hash).matches.len())
                .sum::<usize>()
        })
    });
    group.bench_function("levers_masked", |b| {
        b.iter(|| {
            let v = hash_views(&mut hasher, &img, &masked);
            v.iter()
                .map(|v| matcher.match_pdq(&v.hash).matches.len())
                .sum::<usize>()
        })
    });
    // Where the levers' time goes: hashing the views, and looking each up.
    group.bench_function("levers_hashing_only", |b| {
        b.iter(|| hash_views(&mut hasher, &img, &levers).len())
    });
    let hashes = hash_views(&mut hasher, &img, &levers);
    group.bench_function("levers_lookups_only", |b| {
        b.iter(|| {
            hashes
                .iter()
                .map(|v| matcher.match_pdq(&v.hash).matches.len())
                .sum::<usize>()
        })
    });
    // The first version of the levers (session 6), for comparison in the same run:
    // the eight dihedral transforms of every view, each view at full resolution.
    group.bench_function("levers_all_dihedral_full_res", |b| {
        b.iter(|| {
            let content = content_rect(&img);
            let mut n = 0;
            for view in [img, img.sub(content), img.sub(content.centre(60))] {
                let d = hasher.dihedral(&view);
                n += d
                    .hashes
                    .iter()
                    .map(|h| matcher.match_pdq(h).matches.len())
                    .sum::<usize>();
            }
            n
        })
    });
    group.finish();
}

criterion_group!(benches, views);
criterion_main!(benches);

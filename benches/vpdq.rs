//! vPDQ of a 60 s 720p30 H.264 video at one hash per second.

use std::time::Duration;

use criterion::{Criterion, criterion_group, criterion_main};
use firebreak_media::vpdq::{VpdqOptions, hash_file};

fn vpdq(c: &mut Criterion) {
    let video = firebreak_benches::video_720p30_60s();
    let mut group = c.benchmark_group("vpdq_720p30_60s");
    group
        .sample_size(10)
        .measurement_time(Duration::from_secs(40));
    for threads in [1usize, 0] {
        let opts = VpdqOptions {
            seconds_per_hash: 1.0,
            threads,
            ..Default::default()
        };
        let name = if threads == 1 {
            "1s_per_hash_1_thread"
        } else {
            "1s_per_hash_auto_threads"
        };
        group.bench_function(name, |b| b.iter(|| hash_file(&video, &opts).unwrap()));
    }
    group.finish();
}

criterion_group!(benches, vpdq);
criterion_main!(benches);

//! PDQ hashing throughput on RGB frames (one thread).

use criterion::{Criterion, Throughput, criterion_group, criterion_main};
use firebreak_benches::synthetic_rgb;
use firebreak_hashing::{ImageView, PdqHasher, PixelFormat};

fn pdq(c: &mut Criterion) {
    let mut group = c.benchmark_group("pdq");
    for (w, h) in [(640usize, 480usize), (1280, 720)] {
        let px = synthetic_rgb(w, h, 1);
        let img = ImageView::packed(&px, w, h, PixelFormat::Rgb8).unwrap();
        let mut hasher = PdqHasher::new();
        group.throughput(Throughput::Elements(1));
        group.bench_function(format!("rgb_{w}x{h}"), |b| b.iter(|| hasher.hash(&img)));
        group.bench_function(format!("dihedral_{w}x{h}"), |b| {
            b.iter(|| hasher.dihedral(&img))
        });
    }
    group.finish();
}

criterion_group!(benches, pdq);
criterion_main!(benches);

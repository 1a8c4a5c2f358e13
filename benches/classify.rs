//! open_nsfw with tract: per-frame latency on one thread (preprocessing included, and
//! inference alone), and frames per second with two threads sharing one plan. Compare
//! with onnxruntime's figures in models/test/reference/open_nsfw.json ("latency").

use std::path::Path;

use criterion::{Criterion, Throughput, criterion_group, criterion_main};
use firebreak_classify::{Classifier, RgbImage};

fn classify(c: &mut Criterion) {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("../models/open_nsfw");
    let status = std::process::Command::new(dir.join("../fetch.sh"))
        .status()
        .expect("models/fetch.sh");
    assert!(status.success());
    let mut classifier = Classifier::load(&dir).expect("open_nsfw loads");
    classifier.set_batching(true).unwrap();
    let (w, h) = (1280u32, 720u32);
    let px = firebreak_benches::synthetic_rgb(w as usize, h as usize, 3);
    let frame = RgbImage {
        width: w,
        height: h,
        data: &px,
    };
    let (tensor, _) = classifier.preprocess(&frame);

    let mut group = c.benchmark_group("open_nsfw");
    group.sample_size(20);
    group.throughput(Throughput::Elements(1));
    group.bench_function("preprocess_720p", |b| {
        b.iter(|| classifier.preprocess(&frame))
    });
    group.bench_function("inference_1_thread", |b| {
        b.iter(|| classifier.run_tensor(tensor.clone()).unwrap())
    });
    group.bench_function("classify_720p_1_thread", |b| {
        b.iter(|| classifier.classify(&frame).unwrap())
    });
    let four = [frame, frame, frame, frame];
    group.throughput(Throughput::Elements(4));
    group.bench_function("classify_720p_batch4_1_thread", |b| {
        b.iter(|| classifier.classify_many(&four).unwrap())
    });
    group.throughput(Throughput::Elements(1));
    let mut threaded = classifier.clone();
    threaded.set_threads(2);
    group.bench_function("inference_2_intra_op_threads", |b| {
        b.iter(|| threaded.run_tensor(tensor.clone()).unwrap())
    });
    group.bench_function("classify_720p_2_intra_op_threads", |b| {
        b.iter(|| threaded.classify(&frame).unwrap())
    });
    group.throughput(Throughput::Elements(2));
    group.bench_function("classify_720p_2_threads", |b| {
        b.iter(|| {
            std::thread::scope(|s| {
                let a = s.spawn(|| classifier.classify(&frame).unwrap());
                let b2 = s.spawn(|| classifier.classify(&frame).unwrap());
                (a.join().unwrap(), b2.join().unwrap())
            })
        })
    });
    group.finish();
}

criterion_group!(benches, classify);
criterion_main!(benches);

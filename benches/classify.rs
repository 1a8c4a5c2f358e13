//! open_nsfw with tract: per-frame latency on one thread (preprocessing included, and
//! inference alone), and frames per second with two threads sharing one plan; and both
//! bundled models at batches of 1, 4 and 8 frames. Compare
//! with onnxruntime's figures in models/test/reference/open_nsfw.json ("latency").

use std::path::{Path, PathBuf};

use criterion::{Criterion, Throughput, criterion_group, criterion_main};
use firebreak_classify::{Classifier, RgbImage};

/// The models directory, with `models/fetch.sh WHICH` run first.
fn fetched(which: &str) -> PathBuf {
    let models = Path::new(env!("CARGO_MANIFEST_DIR")).join("../models");
    let status = std::process::Command::new(models.join("fetch.sh"))
        .arg(which)
        .status()
        .expect("models/fetch.sh");
    assert!(status.success(), "models/fetch.sh {which}");
    models
}

const W: u32 = 1280;
const H: u32 = 720;

/// A 720p frame over `px` (from [`firebreak_benches::synthetic_rgb`]).
fn frame(px: &[u8]) -> RgbImage<'_> {
    RgbImage {
        width: W,
        height: H,
        data: px,
    }
}

fn classify(c: &mut Criterion) {
    let dir = fetched("open_nsfw").join("open_nsfw");
    let classifier = Classifier::load(&dir).expect("open_nsfw loads");
    let px = firebreak_benches::synthetic_rgb(W as usize, H as usize, 3);
    let frame = frame(&px);
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

/// Cross-stream batching: frames per second on one thread when a pool runs `classify_many`
/// over batches of 1, 4 and 8 waiting 720p frames (preprocessing included), for each
/// bundled model. A pool is only worth having if a batch beats batch 1 per frame.
fn batches(c: &mut Criterion) {
    let models = fetched("all");
    let px = firebreak_benches::synthetic_rgb(W as usize, H as usize, 3);
    let frame = frame(&px);
    for model in ["open_nsfw", "efficientnet_lite0"] {
        let mut classifier = Classifier::load(&models.join(model)).expect("model loads");
        let mut group = c.benchmark_group(format!("{model}_batches"));
        group.sample_size(10);
        for size in [1usize, 4, 8] {
            if size > 1 && !classifier.batches() {
                // efficientnet_lite0 is converted with a fixed batch of 1.
                eprintln!("{model}: the model's batch dimension is fixed at 1");
                break;
            }
            classifier.set_batch(size).unwrap();
            assert_eq!(classifier.batch(), size, "{model} takes batches");
            let frames = vec![frame; size];
            group.throughput(Throughput::Elements(size as u64));
            group.bench_function(format!("classify_720p_batch{size}_1_thread"), |b| {
                b.iter(|| classifier.classify_many(&frames).unwrap())
            });
        }
        group.finish();
    }
}

criterion_group!(benches, classify, batches);
criterion_main!(benches);

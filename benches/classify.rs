//! open_nsfw with tract: per-frame latency on one thread (preprocessing included, and
//! inference alone), and frames per second with two threads sharing one plan; and both
//! bundled models at batches of 1, 4 and 8 frames. Compare
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
    let classifier = Classifier::load(&dir).expect("open_nsfw loads");
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
    let models = Path::new(env!("CARGO_MANIFEST_DIR")).join("../models");
    let status = std::process::Command::new(models.join("fetch.sh"))
        .arg("all")
        .status()
        .expect("models/fetch.sh all");
    assert!(status.success());
    let (w, h) = (1280u32, 720u32);
    let px = firebreak_benches::synthetic_rgb(w as usize, h as usize, 3);
    let frame = RgbImage {
        width: w,
        height: h,
        data: &px,
    };
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

//! The signal log's cost per recorded frame: building the record on the stream's
//! consumer thread (a clone of the frame's signals) and handing it to the log's queue,
//! and the log thread's share (encoding into a block). A typical frame: PDQ hash, two
//! classifier scores, no match.

use criterion::{Criterion, Throughput, criterion_group, criterion_main};
use firebreak::signals::SignalSink;
use firebreak::signals::log::{SignalLog, SignalLogConfig};
use firebreak::signals::record::{BlockEncoder, FrameRecord, SignalRecord};
use firebreak_policy::policy::{ClassifierScore, FrameSignals};

fn signals(i: u64) -> FrameSignals {
    let score = |category: &str, score: f64| ClassifierScore {
        category: category.into(),
        score,
        model: "nsfw-mobilenet".into(),
        model_version: "3f2a9c1d".into(),
    };
    FrameSignals {
        media_time: i as f64 * 0.5,
        wall_ms: 1_800_000_000_000 + i * 500,
        hash_matches: Vec::new(),
        video_matches: Vec::new(),
        scores: vec![score("graphic_violence", 0.12), score("weapon", 0.03)],
    }
}

fn record(i: u64, s: &FrameSignals) -> SignalRecord {
    SignalRecord::Frame(FrameRecord {
        stream: "platform-stream-000123".into(),
        tenant: "platform".into(),
        pdq: Some(([0xa5; 32], 100)),
        signals: FrameSignals {
            wall_ms: s.wall_ms + i,
            ..s.clone()
        },
    })
}

fn bench(c: &mut Criterion) {
    let mut group = c.benchmark_group("signal_log");
    group.throughput(Throughput::Elements(1));
    let s = signals(1);
    group.bench_function("build_record", |b| {
        let mut i = 0;
        b.iter(|| {
            i += 1;
            record(i, &s)
        })
    });
    let mut encoder = BlockEncoder::new();
    group.bench_function("encode_in_block", |b| {
        let r = record(0, &s);
        b.iter(|| {
            encoder.push(&r);
            if encoder.bytes() >= 256 << 10 {
                encoder.finish();
            }
        })
    });
    let dir = std::env::temp_dir().join(format!("firebreak-bench-signals-{}", std::process::id()));
    let dropped = prometheus::IntCounter::new("dropped", "dropped").unwrap();
    let log = SignalLog::open(&dir, &SignalLogConfig::default(), dropped).unwrap();
    // The consumer thread's whole cost: build the record and queue it; the log's thread
    // encodes and writes meanwhile (flushed every 10,000 so the queue never fills).
    group.bench_function("record_and_queue", |b| {
        let mut i = 0;
        b.iter(|| {
            i += 1;
            log.record(record(i, &s));
            if i % 10_000 == 0 {
                log.flush();
            }
        })
    });
    group.finish();
    log.close();
    println!("dropped records: {}", log.dropped());
    let _ = std::fs::remove_dir_all(&dir);
}

criterion_group!(benches, bench);
criterion_main!(benches);

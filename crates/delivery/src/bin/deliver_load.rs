//! Accepts sample escalation events into an outbox and delivers them to Kafka, printing
//! each acceptance; used by the crash test (killed with SIGKILL mid-stream, restarted
//! with `--drain-only`) and as the delivery load benchmark (decision-to-ack p50/p99).
//!
//! ```text
//! deliver_load --dir D --bootstrap HOST:PORT --topic T [--streams 8] [--events 1000]
//!              [--rate EVENTS_PER_SEC (0 = as fast as possible)] [--drain-only]
//! ```
//! Prints `recovered pending=P acked=A next=N`, then `accepted SEQ ID` per event (after
//! it is synced), then one JSON line of figures once everything is delivered.

#![forbid(unsafe_code)]

use std::io::Write;
use std::time::{Duration, Instant};

use firebreak_delivery::{DeliveryMetrics, KafkaConfig, KafkaSink, Outbox, OutboxConfig, Pipeline};
use firebreak_policy::event::{Producer, sample_events};

fn arg(args: &[String], flag: &str) -> Option<String> {
    args.iter()
        .position(|a| a == flag)
        .and_then(|i| args.get(i + 1))
        .cloned()
}

fn percentile(sorted: &[f64], p: f64) -> f64 {
    if sorted.is_empty() {
        return 0.0;
    }
    sorted[((sorted.len() - 1) as f64 * p).round() as usize]
}

#[tokio::main(flavor = "multi_thread", worker_threads = 2)]
async fn main() {
    let args: Vec<String> = std::env::args().collect();
    let dir = std::path::PathBuf::from(arg(&args, "--dir").expect("--dir"));
    let bootstrap = arg(&args, "--bootstrap").expect("--bootstrap");
    let topic = arg(&args, "--topic").expect("--topic");
    let streams: usize = arg(&args, "--streams").map_or(8, |v| v.parse().expect("--streams"));
    let total: usize = arg(&args, "--events").map_or(1000, |v| v.parse().expect("--events"));
    let rate: f64 = arg(&args, "--rate").map_or(0.0, |v| v.parse().expect("--rate"));
    let drain_only = args.iter().any(|a| a == "--drain-only");

    let (outbox, recovery) = Outbox::open(&dir, OutboxConfig::default()).expect("outbox");
    let next = outbox.acked() + outbox.depth() as u64 + 1;
    println!(
        "recovered pending={} acked={} next={next}",
        recovery.pending, recovery.acked
    );
    let metrics = DeliveryMetrics::new(&prometheus::Registry::new()).expect("metrics");
    let pipeline = Pipeline::new(outbox, &dir, metrics);
    pipeline.log_latencies();
    let sink = KafkaSink::new(&KafkaConfig::new(&bootstrap, &topic)).expect("producer");
    let (stop_tx, stop_rx) = tokio::sync::oneshot::channel::<()>();
    let runner = {
        let p = pipeline.clone();
        tokio::spawn(async move {
            p.run(&sink, 64, async {
                stop_rx.await.ok();
            })
            .await;
            sink
        })
    };

    let started = Instant::now();
    let mut accepted = 0usize;
    if !drain_only {
        let producer = Producer {
            worker_id: "load".into(),
            tenant: "bench".into(),
        };
        let events = sample_events(streams, total.div_ceil(streams), &producer);
        // Continue where a killed run stopped: the outbox knows how many it accepted.
        for (key, event) in events.into_iter().take(total).skip(next as usize - 1) {
            if rate > 0.0 {
                let due = started + Duration::from_secs_f64(accepted as f64 / rate);
                tokio::time::sleep_until(due.into()).await;
            }
            let id = serde_json::from_slice::<serde_json::Value>(&event).expect("event JSON")["id"]
                .as_str()
                .expect("event id")
                .to_owned();
            let p = pipeline.clone();
            let seq = tokio::task::spawn_blocking(move || p.accept(&key, &event).expect("accept"))
                .await
                .expect("accept task");
            println!("accepted {seq} {id}");
            std::io::stdout().flush().ok();
            accepted += 1;
        }
    }
    while pipeline.depth() > 0 {
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    let elapsed = started.elapsed().as_secs_f64();
    let _ = stop_tx.send(());
    let sink = runner.await.expect("runner");
    sink.flush(Duration::from_secs(10)).ok();
    let mut lat = pipeline.latencies();
    lat.sort_by(f64::total_cmp);
    println!(
        "{{\"accepted\": {accepted}, \"delivered\": {}, \"seconds\": {elapsed:.3}, \
         \"events_per_second\": {:.1}, \"ack_p50_ms\": {:.2}, \"ack_p99_ms\": {:.2}, \
         \"ack_max_ms\": {:.2}}}",
        pipeline.metrics().delivered.get(),
        accepted as f64 / elapsed,
        percentile(&lat, 0.5) * 1000.0,
        percentile(&lat, 0.99) * 1000.0,
        lat.last().copied().unwrap_or(0.0) * 1000.0,
    );
}

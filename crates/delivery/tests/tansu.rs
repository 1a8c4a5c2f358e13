//! Delivery against a real Kafka-protocol broker: tansu 0.6.0 (in-memory storage),
//! started by `scripts/tansu.sh` for each test. Produce and consume back; then a
//! producing process killed with SIGKILL mid-stream and restarted: everything it had
//! accepted is delivered.

mod support;

use std::io::{BufRead, BufReader};
use std::process::{Command, Stdio};
use std::time::Duration;

use firebreak_delivery::{KafkaConfig, KafkaSink};
use firebreak_testkit::tansu::TansuBroker;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn produce_and_consume_back() {
    let broker = TansuBroker::start().unwrap();
    let dir = tempfile::tempdir().unwrap();
    let p = support::pipeline(dir.path());
    let events = support::events(5, 12);
    for (k, e) in &events {
        p.accept(k, e).unwrap();
    }
    let sink = KafkaSink::new(&KafkaConfig::new(&broker.bootstrap, "escalations")).unwrap();
    let runner = support::Runner::start(&p, sink, 16);
    assert!(
        support::drained(&p, Duration::from_secs(60)).await,
        "outbox not drained"
    );
    runner.stop().await;
    let consumed = support::consume(
        &broker.bootstrap,
        "escalations",
        events.len(),
        Duration::from_secs(60),
    );
    assert_eq!(support::check(&events, &consumed), 0);
}

#[test]
fn sigkill_mid_stream_then_restart_delivers_everything_accepted() {
    let broker = TansuBroker::start().unwrap();
    let outbox = tempfile::tempdir().unwrap();
    let run = |extra: &[&str]| {
        Command::new(env!("CARGO_BIN_EXE_deliver_load"))
            .arg("--dir")
            .arg(outbox.path())
            .args([
                "--bootstrap",
                &broker.bootstrap,
                "--topic",
                "crash",
                "--streams",
                "6",
            ])
            .args(["--events", "600", "--rate", "400"])
            .args(extra)
            .stdout(Stdio::piped())
            .spawn()
            .unwrap()
    };
    // First run: kill it with SIGKILL once 200 events are accepted.
    let mut child = run(&[]);
    let mut lines = BufReader::new(child.stdout.take().unwrap()).lines();
    let mut printed = Vec::new();
    for line in lines.by_ref() {
        let line = line.unwrap();
        if let Some(rest) = line.strip_prefix("accepted ") {
            printed.push(rest.split(' ').nth(1).unwrap().to_owned());
            if printed.len() == 200 {
                break;
            }
        }
    }
    child.kill().unwrap(); // SIGKILL
    child.wait().unwrap();
    assert_eq!(printed.len(), 200);

    // Restart, deliver what the outbox holds, and exit.
    let restart = run(&["--drain-only"]).wait_with_output().unwrap();
    assert!(restart.status.success());
    let out = String::from_utf8(restart.stdout).unwrap();
    let first = out.lines().next().unwrap();
    let next: usize = first.rsplit("next=").next().unwrap().parse().unwrap();
    let accepted = next - 1;
    assert!(
        accepted >= 200,
        "the outbox holds at least what was reported accepted: {first}"
    );
    // Which events those were: the generator is deterministic.
    let producer = firebreak_policy::event::Producer {
        worker_id: "load".into(),
        tenant: "bench".into(),
    };
    let all = firebreak_policy::event::sample_events(6, 100, &producer);
    let expected: Vec<(String, Vec<u8>)> = all.into_iter().take(accepted).collect();
    let ids: Vec<String> = expected
        .iter()
        .map(|(_, e)| {
            serde_json::from_slice::<serde_json::Value>(e).unwrap()["id"]
                .as_str()
                .unwrap()
                .to_owned()
        })
        .collect();
    assert_eq!(
        &ids[..200],
        &printed[..],
        "the accepted events are the first ones generated"
    );

    let consumed = support::consume(
        &broker.bootstrap,
        "crash",
        accepted,
        Duration::from_secs(60),
    );
    let duplicates = support::check(&expected, &consumed);
    eprintln!(
        "accepted {accepted}, delivered {} distinct, {duplicates} duplicates dropped by id",
        consumed.len() - duplicates
    );
}

use firebreak_testkit::net::free_port;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn broker_absent_at_first_then_started_receives_everything() {
    TansuBroker::install().unwrap();
    let port = free_port();
    let bootstrap = format!("127.0.0.1:{port}");
    let dir = tempfile::tempdir().unwrap();
    let p = support::pipeline(dir.path());
    let events = support::events(4, 6);
    for (k, e) in &events {
        p.accept(k, e).unwrap();
    }
    let mut config = KafkaConfig::new(&bootstrap, "outage");
    config.message_timeout = Duration::from_secs(2);
    let sink = KafkaSink::new(&config).unwrap();
    let runner = support::Runner::start(&p, sink, 8);
    // No broker: deliveries time out and are retried; nothing is acknowledged.
    let started = std::time::Instant::now();
    while p.metrics().errors.with_label_values(&["retryable"]).get() == 0 {
        assert!(
            started.elapsed() < Duration::from_secs(60),
            "no retryable error without a broker"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    assert_eq!(p.depth(), events.len());
    // The broker comes up on that port.
    let broker = TansuBroker::start_on(port).unwrap();
    assert_eq!(broker.bootstrap, bootstrap);
    assert!(
        support::drained(&p, Duration::from_secs(90)).await,
        "outbox not drained once the broker is up"
    );
    runner.stop().await;
    let consumed = support::consume(
        &broker.bootstrap,
        "outage",
        events.len(),
        Duration::from_secs(60),
    );
    support::check(&events, &consumed);
    assert_eq!(p.metrics().delivered.get() as usize, events.len());
}

//! Delivery against librdkafka's mock cluster (a Kafka protocol implementation inside
//! librdkafka), where faults can be injected: broker outages and fatal errors.

mod support;

use std::time::Duration;

use firebreak_delivery::{KafkaConfig, KafkaSink};
use rdkafka::mocking::MockCluster;
use rdkafka::types::{RDKafkaApiKey, RDKafkaRespErr};

fn sink(bootstrap: &str, topic: &str) -> KafkaSink {
    let mut config = KafkaConfig::new(bootstrap, topic);
    config.message_timeout = Duration::from_secs(2);
    KafkaSink::new(&config).unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn delivers_in_order_with_keys_headers_and_schema() {
    let mock = MockCluster::new(1).unwrap();
    mock.create_topic("escalations", 3, 1).unwrap();
    let dir = tempfile::tempdir().unwrap();
    let p = support::pipeline(dir.path());
    let events = support::events(4, 10);
    for (k, e) in &events {
        p.accept(k, e).unwrap();
    }
    let sink = sink(&mock.bootstrap_servers(), "escalations");
    let runner = support::Runner::start(&p, sink, 16);
    assert!(
        support::drained(&p, Duration::from_secs(30)).await,
        "outbox not drained"
    );
    runner.stop().await;
    let consumed = support::consume(
        &mock.bootstrap_servers(),
        "escalations",
        events.len(),
        Duration::from_secs(30),
    );
    assert_eq!(
        support::check(&events, &consumed),
        0,
        "no duplicates without faults"
    );
    assert_eq!(p.metrics().delivered.get(), events.len() as u64);
    assert_eq!(
        p.metrics().decision_to_ack.get_sample_count(),
        events.len() as u64
    );
    // Keys spread over partitions, one partition per stream.
    let mut partition_of = std::collections::HashMap::new();
    for c in &consumed {
        assert_eq!(
            *partition_of.entry(c.key.clone()).or_insert(c.partition),
            c.partition
        );
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn broker_outage_then_recovery_loses_nothing() {
    let mock = MockCluster::new(1).unwrap();
    mock.create_topic("escalations", 2, 1).unwrap();
    let dir = tempfile::tempdir().unwrap();
    let p = support::pipeline(dir.path());
    let events = support::events(3, 8);
    let (first, second) = events.split_at(10);
    for (k, e) in first {
        p.accept(k, e).unwrap();
    }
    mock.broker_down(1).unwrap();
    let sink = sink(&mock.bootstrap_servers(), "escalations");
    let runner = support::Runner::start(&p, sink, 8);
    // While the broker is down, deliveries fail (message timeout 2 s) and are retried.
    let started = std::time::Instant::now();
    while p.metrics().errors.with_label_values(&["retryable"]).get() == 0 {
        assert!(
            started.elapsed() < Duration::from_secs(60),
            "no retryable error while the broker was down"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    assert_eq!(
        p.depth(),
        10,
        "nothing is acknowledged while the broker is down"
    );
    // More events are accepted during the outage.
    for (k, e) in second {
        p.accept(k, e).unwrap();
    }
    mock.broker_up(1).unwrap();
    assert!(
        support::drained(&p, Duration::from_secs(60)).await,
        "outbox not drained after recovery"
    );
    runner.stop().await;
    let consumed = support::consume(
        &mock.bootstrap_servers(),
        "escalations",
        events.len(),
        Duration::from_secs(30),
    );
    support::check(&events, &consumed);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn fatal_errors_are_dead_lettered_not_retried() {
    let mock = MockCluster::new(1).unwrap();
    mock.create_topic("escalations", 1, 1).unwrap();
    // The first produce request fails with "message too large".
    mock.request_errors(
        RDKafkaApiKey::Produce,
        &[RDKafkaRespErr::RD_KAFKA_RESP_ERR_MSG_SIZE_TOO_LARGE],
    );
    let dir = tempfile::tempdir().unwrap();
    let p = support::pipeline(dir.path());
    let events = support::events(1, 4);
    p.accept(&events[0].0, &events[0].1).unwrap();
    let sink = sink(&mock.bootstrap_servers(), "escalations");
    let runner = support::Runner::start(&p, sink, 1);
    assert!(support::drained(&p, Duration::from_secs(30)).await);
    for (k, e) in &events[1..] {
        p.accept(k, e).unwrap();
    }
    assert!(support::drained(&p, Duration::from_secs(30)).await);
    runner.stop().await;
    assert_eq!(p.metrics().dead_lettered.get(), 1);
    assert_eq!(
        p.metrics().errors.with_label_values(&["retryable"]).get(),
        0
    );
    let dead = std::fs::read_to_string(dir.path().join("dead-letter.jsonl")).unwrap();
    let line: serde_json::Value = serde_json::from_str(dead.lines().next().unwrap()).unwrap();
    assert_eq!(line["seq"], 1);
    assert!(
        line["error"].as_str().unwrap().contains("too large"),
        "{line}"
    );
    let consumed = support::consume(
        &mock.bootstrap_servers(),
        "escalations",
        3,
        Duration::from_secs(30),
    );
    support::check(&events[1..], &consumed);
}

/// The broker refuses authorisation for the topic: every event would fail the same
/// way, so delivery pauses (alarm: the gauge and the status say why) instead of
/// dead-lettering each one, and resumes in order once the broker accepts again (the
/// injected errors run out, as a fixed ACL would).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn authorisation_errors_pause_delivery_and_it_resumes_in_order() {
    let mock = MockCluster::new(1).unwrap();
    mock.create_topic("escalations", 1, 1).unwrap();
    mock.request_errors(
        RDKafkaApiKey::Produce,
        &[RDKafkaRespErr::RD_KAFKA_RESP_ERR_TOPIC_AUTHORIZATION_FAILED; 3],
    );
    let dir = tempfile::tempdir().unwrap();
    let p = support::pipeline(dir.path());
    let events = support::events(2, 3);
    for (k, e) in &events {
        p.accept(k, e).unwrap();
    }
    let sink = sink(&mock.bootstrap_servers(), "escalations");
    let runner = support::Runner::start(&p, sink, 2);
    let started = std::time::Instant::now();
    while p.metrics().paused.get() == 0 {
        assert!(
            started.elapsed() < Duration::from_secs(60),
            "delivery never paused"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let why = p.status().paused.expect("the status says why");
    assert!(why.to_lowercase().contains("authoriz"), "{why}");
    assert_eq!(p.depth(), events.len(), "nothing acknowledged while paused");
    // Probes (the first one after 100 ms) run the injected errors out; then everything
    // is delivered, in order, and nothing was dead-lettered.
    assert!(
        support::drained(&p, Duration::from_secs(60)).await,
        "delivery did not resume"
    );
    runner.stop().await;
    assert_eq!(p.metrics().paused.get(), 0);
    assert_eq!(p.status().paused, None);
    assert_eq!(p.metrics().dead_lettered.get(), 0);
    assert!(!dir.path().join("dead-letter.jsonl").exists());
    assert!(p.metrics().errors.with_label_values(&["paused"]).get() >= 1);
    let consumed = support::consume(
        &mock.bootstrap_servers(),
        "escalations",
        events.len(),
        Duration::from_secs(30),
    );
    support::check(&events, &consumed);
}

/// The embedded default: no Kafka configured, events go to a JSONL log.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn jsonl_log_when_no_kafka_is_configured() {
    let dir = tempfile::tempdir().unwrap();
    let p = support::pipeline(&dir.path().join("outbox"));
    let log = dir.path().join("events.jsonl");
    let sink = firebreak_delivery::JsonlSink::open(&log).unwrap();
    let events = support::events(2, 5);
    for (k, e) in &events {
        p.accept(k, e).unwrap();
    }
    let runner = support::Runner::start(&p, sink, 4);
    assert!(support::drained(&p, Duration::from_secs(30)).await);
    runner.stop().await;
    let lines: Vec<String> = std::fs::read_to_string(&log)
        .unwrap()
        .lines()
        .map(str::to_owned)
        .collect();
    let want: Vec<String> = events
        .iter()
        .map(|(_, e)| String::from_utf8(e.clone()).unwrap())
        .collect();
    assert_eq!(lines, want, "every event, in order, once");
}

//! Errors that no event can get past pause delivery instead of dead-lettering, and an
//! event is acknowledged as dead-lettered only once its dead-letter line is synced.

mod support;

use std::time::{Duration, Instant};

use firebreak_delivery::{DeliveryError, JsonlSink, Record, Sink};

/// Polls `f` (bounded, generous) until it holds.
async fn until(what: &str, mut f: impl FnMut() -> bool) {
    let started = Instant::now();
    while !f() {
        assert!(
            started.elapsed() < Duration::from_secs(60),
            "timed out waiting for {what}"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

/// The event log is on a full disk (`/dev/full`: every write fails with ENOSPC):
/// delivery pauses with the reason, nothing is dead-lettered or acknowledged; when the
/// operator puts a writable file in its place and asks for a probe (what SIGHUP does),
/// every event arrives, in order, once.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_full_event_log_pauses_delivery_until_fixed() {
    let dir = tempfile::tempdir().unwrap();
    let p = support::pipeline(&dir.path().join("outbox"));
    let log = dir.path().join("events.jsonl");
    std::os::unix::fs::symlink("/dev/full", &log).unwrap();
    let sink = JsonlSink::open(&log).unwrap();
    let events = support::events(2, 3);
    for (k, e) in &events {
        p.accept(k, e).unwrap();
    }
    let runner = support::Runner::start(&p, sink, 4);
    until("delivery paused", || p.metrics().paused.get() == 1).await;
    let why = p.status().paused.unwrap();
    assert!(why.contains("events.jsonl"), "{why}");
    assert_eq!(p.depth(), events.len());
    assert_eq!(p.metrics().dead_lettered.get(), 0);

    std::fs::remove_file(&log).unwrap();
    std::fs::write(&log, b"").unwrap();
    p.resume();
    until("the outbox drained", || p.depth() == 0).await;
    runner.stop().await;
    assert_eq!(p.metrics().paused.get(), 0);
    assert_eq!(p.status().paused, None);
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
    assert!(!dir.path().join("outbox/dead-letter.jsonl").exists());
}

/// Refuses every record whose key is `poison` as fatal, delivers the rest.
struct Poison;

impl Sink for Poison {
    async fn deliver(&self, records: &[Record]) -> Vec<Result<(), DeliveryError>> {
        records
            .iter()
            .map(|r| {
                if r.key == "poison" {
                    Err(DeliveryError::Fatal("message too large".into()))
                } else {
                    Ok(())
                }
            })
            .collect()
    }
}

/// While the dead-letter file cannot be written (a directory stands in its place), a
/// fatally failed event is neither acknowledged nor counted as dead-lettered: it and
/// what follows stay in the outbox. Once the file can be written, the event is
/// dead-lettered (its line on disk) and the outbox empties.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_dead_letter_is_acknowledged_only_once_written() {
    let dir = tempfile::tempdir().unwrap();
    let p = support::pipeline(dir.path());
    let dead = dir.path().join("dead-letter.jsonl");
    std::fs::create_dir(&dead).unwrap();
    p.accept("good", b"{\"n\":1}").unwrap();
    p.accept("poison", b"{\"n\":2}").unwrap();
    p.accept("good", b"{\"n\":3}").unwrap();
    let runner = support::Runner::start(&p, Poison, 8);
    // The first event is delivered and acknowledged; the poison one stays, with the
    // event after it.
    until("the first event acknowledged", || p.depth() == 2).await;
    until("a failed dead-letter write", || {
        p.metrics().errors.with_label_values(&["fatal"]).get() >= 2
    })
    .await;
    assert_eq!(p.depth(), 2);
    assert_eq!(p.metrics().dead_lettered.get(), 0);

    std::fs::remove_dir(&dead).unwrap();
    until("the outbox drained", || p.depth() == 0).await;
    runner.stop().await;
    assert_eq!(p.metrics().dead_lettered.get(), 1);
    let lines: Vec<serde_json::Value> = std::fs::read_to_string(&dead)
        .unwrap()
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    assert_eq!(lines.len(), 1, "{lines:?}");
    assert_eq!(lines[0]["seq"], 2);
    assert_eq!(lines[0]["key"], "poison");
}

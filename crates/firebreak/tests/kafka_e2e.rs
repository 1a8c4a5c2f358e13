//! The whole path against a real Kafka-protocol broker (tansu, started by
//! `scripts/tansu.sh`): a known clip inside pushed live streams escalates, and the
//! escalation arrives on the topic keyed by the stream id. Prints the end-to-end
//! latency (segment arrival to the broker's ack) as measured by the daemon.

mod support;

use std::time::Duration;

use serde_json::Value;
use support::{INGEST, READ};

fn percentile(sorted: &[f64], p: f64) -> f64 {
    sorted[((sorted.len() - 1) as f64 * p).round() as usize]
}

#[test]
fn escalations_reach_the_topic_keyed_by_stream() {
    let broker = firebreak_testkit::tansu::TansuBroker::start().unwrap();
    let dir = tempfile::tempdir().unwrap();
    let prog = support::programme_with_banked_clip(dir.path());
    let topic = "firebreak.escalations";
    let mut d = support::start_in(
        dir,
        &format!(
            "[ingest]\nsampling = \"2/s\"\n[sink]\nkind = \"kafka\"\nbrokers = \"{}\"\ntopic = \"{topic}\"\n",
            broker.bootstrap
        ),
    );
    let bytes = std::fs::read(&prog).unwrap();
    let streams: Vec<String> = (0..6).map(|i| format!("cam-{i}")).collect();
    // Two platforms' ingest threads push three streams each, segment by segment.
    std::thread::scope(|s| {
        for group in streams.chunks(3) {
            let (d, bytes) = (&d, &bytes);
            s.spawn(move || {
                for (i, part) in bytes.chunks(64 * 1024).enumerate() {
                    for id in group {
                        let path = format!("/v1/streams/{id}/segments/{i}");
                        let (status, body) = d.call("PUT", &path, Some(INGEST), part);
                        assert_eq!(status, 200, "{body}");
                    }
                }
                for id in group {
                    let path = format!("/v1/streams/{id}/end");
                    assert_eq!(d.call("POST", &path, Some(INGEST), b"").0, 200);
                }
            });
        }
    });
    for id in &streams {
        d.wait_state(id, "ended");
    }
    // Each stream: one escalation to crisis, and the close when it ended.
    let want = streams.len() * 2;
    let messages = firebreak_testkit::kafka::read_topic(
        &broker.bootstrap,
        topic,
        want,
        Duration::from_secs(120),
    )
    .unwrap();
    assert_eq!(messages.len(), want, "{}", d.stderr());
    for id in &streams {
        let mine: Vec<Value> = messages
            .iter()
            .filter(|m| &m.key == id)
            .map(|m| serde_json::from_slice(&m.payload).unwrap())
            .collect();
        assert_eq!(mine.len(), 2, "{id}");
        assert_eq!(mine[0]["subject"], id.as_str());
        assert_eq!(mine[0]["data"]["kind"], "escalated");
        assert_eq!(mine[0]["data"]["tier"], "crisis");
        assert_eq!(mine[1]["data"]["kind"], "ended");
        assert_eq!(
            mine[0]["data"]["incident_id"],
            mine[1]["data"]["incident_id"]
        );
    }
    let listed = d.get("/v1/escalations", READ);
    assert_eq!(
        listed["escalations"].as_array().unwrap().len(),
        streams.len()
    );

    assert!(d.terminate().success());
    let mut latencies: Vec<f64> = d
        .stderr()
        .lines()
        .filter_map(|l| l.split("end_to_end_ms=").nth(1))
        .filter_map(|v| v.split_whitespace().next()?.parse().ok())
        .collect();
    assert_eq!(
        latencies.len(),
        streams.len(),
        "one escalation per stream came from a frame with a known arrival time"
    );
    latencies.sort_by(f64::total_cmp);
    eprintln!(
        "segment arrival to Kafka ack over {} escalations: p50 {:.0} ms, p99 {:.0} ms, max {:.0} ms",
        latencies.len(),
        percentile(&latencies, 0.5),
        percentile(&latencies, 0.99),
        latencies[latencies.len() - 1]
    );
}

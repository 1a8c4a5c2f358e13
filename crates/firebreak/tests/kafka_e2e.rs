//! The whole path against a real Kafka-protocol broker (tansu, started by
//! `scripts/tansu.sh`): a known clip inside pushed live streams escalates, and the
//! escalation arrives on the topic keyed by the stream id. Prints the end-to-end
//! latency (segment arrival to the broker's ack) as measured by the daemon. Kafka
//! settings fixed in the config file take effect on SIGHUP.

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

/// Credentials the broker refuses: nothing is delivered (the escalation waits in the
/// outbox). The operator fixes `[sink] properties` in the config file and sends SIGHUP:
/// the sink takes the new settings without a restart, and the waiting escalation
/// arrives.
#[test]
fn kafka_settings_fixed_in_the_config_file_take_effect_on_sighup() {
    let broker = firebreak_testkit::tansu::TansuBroker::start().unwrap();
    let dir = tempfile::tempdir().unwrap();
    let prog = support::programme_with_banked_clip(dir.path());
    let topic = "firebreak.escalations";
    let sink = |properties: &str| {
        format!(
            "[ingest]\nsampling = \"2/s\"\n[sink]\nkind = \"kafka\"\nbrokers = \"{}\"\ntopic = \"{topic}\"\nproperties = {properties}\n",
            broker.bootstrap
        )
    };
    let refused = r#"{ "security.protocol" = "SASL_PLAINTEXT", "sasl.mechanism" = "PLAIN", "sasl.username" = "firebreak", "sasl.password" = "wrong" }"#;
    let d = support::start_in(dir, &sink(refused));
    let bytes = std::fs::read(&prog).unwrap();
    for (i, part) in bytes.chunks(64 * 1024).enumerate() {
        let path = format!("/v1/streams/cam/segments/{i}");
        let (status, body) = d.call("PUT", &path, Some(INGEST), part);
        assert_eq!(status, 200, "{body}");
    }
    d.wait("the escalation waiting in the outbox", 60, || {
        let (_, ready) = d.call("GET", "/readyz", None, b"");
        (ready["checks"]["outbox_depth"] == 1).then_some(())
    });
    // Nothing reached the broker (the topic, created by the first message, does not
    // exist yet).
    match firebreak_testkit::kafka::read_topic(&broker.bootstrap, topic, 1, Duration::from_secs(3))
    {
        Ok(none) => assert!(
            none.is_empty(),
            "delivered with refused credentials: {none:?}"
        ),
        Err(e) => assert!(e.to_string().contains("UnknownTopicOrPartition"), "{e}"),
    }

    // The operator fixes the properties and sends SIGHUP.
    let text = std::fs::read_to_string(&d.config).unwrap();
    assert!(text.contains(refused));
    std::fs::write(&d.config, text.replace(refused, "{}")).unwrap();
    let hup = std::process::Command::new("kill")
        .args(["-HUP", &d.child.id().to_string()])
        .status()
        .unwrap();
    assert!(hup.success());
    // Delivered (the outbox empties), then read back from the topic.
    d.wait("the outbox empty", 90, || {
        let (_, ready) = d.call("GET", "/readyz", None, b"");
        (ready["checks"]["outbox_depth"] == 0).then_some(())
    });
    let got =
        firebreak_testkit::kafka::read_topic(&broker.bootstrap, topic, 1, Duration::from_secs(60))
            .unwrap();
    assert_eq!(got.len(), 1, "{got:?}");
    let event: Value = serde_json::from_slice(&got[0].payload).unwrap();
    assert_eq!(event["subject"], "cam", "{event}");
    assert_eq!(event["data"]["kind"], "escalated", "{event}");
}

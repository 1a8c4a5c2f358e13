//! Shared by the delivery tests: real escalation events from the policy, a consumer
//! that reads a topic back, and the checks every test makes.

#![allow(dead_code)]

use std::collections::{BTreeMap, HashMap};
use std::path::Path;
use std::time::{Duration, Instant};

use firebreak_delivery::{DeliveryMetrics, Outbox, OutboxConfig, Pipeline, Sink};
use firebreak_policy::event::{Producer, sample_events};
use rdkafka::ClientConfig;
use rdkafka::consumer::{BaseConsumer, Consumer};
use rdkafka::message::{Headers, Message};

/// `per_stream` escalation events for each of `streams` streams: (key, event JSON).
pub fn events(streams: usize, per_stream: usize) -> Vec<(String, Vec<u8>)> {
    let producer = Producer {
        worker_id: "test-worker".into(),
        tenant: "tenant-a".into(),
    };
    sample_events(streams, per_stream, &producer)
}

pub fn pipeline(dir: &Path) -> Pipeline {
    let (outbox, _) = Outbox::open(dir, OutboxConfig::default()).unwrap();
    let metrics = DeliveryMetrics::new(&prometheus::Registry::new()).unwrap();
    Pipeline::new(outbox, dir, metrics)
}

/// A consumed message.
#[derive(Debug, Clone)]
pub struct Consumed {
    pub key: String,
    pub id: String,
    pub headers: HashMap<String, String>,
    pub event: serde_json::Value,
    pub partition: i32,
}

/// Reads `topic` from the beginning until `want` distinct event ids arrived or
/// `deadline` passes.
pub fn consume(bootstrap: &str, topic: &str, want: usize, deadline: Duration) -> Vec<Consumed> {
    let consumer: BaseConsumer = ClientConfig::new()
        .set("bootstrap.servers", bootstrap)
        .set("group.id", format!("check-{}", std::process::id()))
        .set("auto.offset.reset", "earliest")
        .set("enable.auto.commit", "false")
        // tansu holds a group join for about half the session timeout.
        .set("session.timeout.ms", "6000")
        .create()
        .unwrap();
    consumer.subscribe(&[topic]).unwrap();
    let started = Instant::now();
    let mut out: Vec<Consumed> = Vec::new();
    let mut distinct = std::collections::HashSet::new();
    while distinct.len() < want && started.elapsed() < deadline {
        let Some(msg) = consumer.poll(Duration::from_millis(200)) else {
            continue;
        };
        let msg = msg.unwrap();
        let mut headers = HashMap::new();
        if let Some(h) = msg.headers() {
            for hdr in h.iter() {
                headers.insert(
                    hdr.key.to_owned(),
                    String::from_utf8_lossy(hdr.value.unwrap_or_default()).into_owned(),
                );
            }
        }
        let event: serde_json::Value = serde_json::from_slice(msg.payload().unwrap()).unwrap();
        let id = event["id"].as_str().unwrap().to_owned();
        distinct.insert(id.clone());
        out.push(Consumed {
            key: String::from_utf8(msg.key().unwrap().to_vec()).unwrap(),
            id,
            headers,
            event,
            partition: msg.partition(),
        });
    }
    out
}

fn schema() -> jsonschema::Validator {
    let path = concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/../../schemas/escalation-v1.schema.json"
    );
    let schema: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(path).unwrap()).unwrap();
    jsonschema::validator_for(&schema).unwrap()
}

/// Every accepted event arrived (after dropping duplicates by id), nothing else did,
/// each stream's events arrived in accepted order, keys and headers match the event,
/// and the data matches the schema. Returns the number of duplicates dropped.
pub fn check(accepted: &[(String, Vec<u8>)], consumed: &[Consumed]) -> usize {
    let validator = schema();
    let mut first: Vec<&Consumed> = Vec::new();
    let mut seen = std::collections::HashSet::new();
    for c in consumed {
        if seen.insert(c.id.clone()) {
            first.push(c);
        }
    }
    let want: BTreeMap<String, Vec<String>> =
        accepted.iter().fold(BTreeMap::new(), |mut m, (k, e)| {
            let v: serde_json::Value = serde_json::from_slice(e).unwrap();
            m.entry(k.clone())
                .or_insert_with(Vec::new)
                .push(v["id"].as_str().unwrap().to_owned());
            m
        });
    let got: BTreeMap<String, Vec<String>> = first.iter().fold(BTreeMap::new(), |mut m, c| {
        m.entry(c.key.clone())
            .or_insert_with(Vec::new)
            .push(c.id.clone());
        m
    });
    assert_eq!(
        got, want,
        "per-stream ids, in order, after dropping duplicates"
    );
    for c in consumed {
        assert_eq!(c.key, c.event["subject"], "key = stream id");
        assert_eq!(c.headers["ce_id"], c.id);
        assert_eq!(c.headers["ce_type"], "org.firebreak.escalation.v1");
        assert_eq!(c.headers["ce_specversion"], "1.0");
        assert_eq!(
            c.headers["content-type"],
            "application/cloudevents+json; charset=utf-8"
        );
        let errors: Vec<String> = validator
            .iter_errors(&c.event["data"])
            .map(|e| e.to_string())
            .collect();
        assert!(errors.is_empty(), "{errors:?}");
    }
    consumed.len() - first.len()
}

/// Waits (polling the pipeline, bounded) until the outbox is empty.
pub async fn drained(p: &Pipeline, deadline: Duration) -> bool {
    let started = Instant::now();
    while p.depth() > 0 {
        if started.elapsed() > deadline {
            return false;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    true
}

/// A replayer running in the background until stopped.
pub struct Runner {
    stop: tokio::sync::oneshot::Sender<()>,
    handle: tokio::task::JoinHandle<()>,
}

impl Runner {
    /// Starts delivering `p`'s outbox to `sink` in batches of `batch`.
    pub fn start<S: Sink + 'static>(p: &Pipeline, sink: S, batch: usize) -> Runner {
        let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
        let p = p.clone();
        let handle = tokio::spawn(async move {
            p.run(&sink, batch, async {
                stopped.await.ok();
            })
            .await
        });
        Runner { stop, handle }
    }

    /// Stops the replayer and waits for it.
    pub async fn stop(self) {
        let _ = self.stop.send(());
        self.handle.await.unwrap();
    }
}

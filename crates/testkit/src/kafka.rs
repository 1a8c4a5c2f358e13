//! Reading a topic back, for end-to-end checks.

use std::time::Duration;

use rdkafka::ClientConfig;
use rdkafka::error::KafkaError;

/// A message read back from a topic.
#[derive(Debug, Clone)]
pub struct TopicMessage {
    /// The key (the stream id for escalations).
    pub key: String,
    /// The body.
    pub payload: Vec<u8>,
    /// The broker's timestamp, ms since the Unix epoch.
    pub timestamp_ms: Option<i64>,
}

/// Reads `topic` from the beginning until `want` messages arrived or `deadline` passes
/// (for end-to-end checks and operators' spot checks; the monitor itself only
/// produces).
pub fn read_topic(
    bootstrap: &str,
    topic: &str,
    want: usize,
    deadline: Duration,
) -> Result<Vec<TopicMessage>, KafkaError> {
    use rdkafka::consumer::{BaseConsumer, Consumer};
    use rdkafka::message::Message;
    let consumer: BaseConsumer = ClientConfig::new()
        .set("bootstrap.servers", bootstrap)
        .set("group.id", format!("firebreak-read-{}", std::process::id()))
        .set("auto.offset.reset", "earliest")
        .set("enable.auto.commit", "false")
        .set("session.timeout.ms", "6000")
        .create()?;
    consumer.subscribe(&[topic])?;
    let started = std::time::Instant::now();
    let mut out = Vec::new();
    while out.len() < want && started.elapsed() < deadline {
        let Some(msg) = consumer.poll(Duration::from_millis(200)) else {
            continue;
        };
        let msg = msg?;
        out.push(TopicMessage {
            key: String::from_utf8_lossy(msg.key().unwrap_or_default()).into_owned(),
            payload: msg.payload().unwrap_or_default().to_vec(),
            timestamp_ms: msg.timestamp().to_millis(),
        });
    }
    Ok(out)
}

/// Reads every partition of `topic` from the beginning, without a consumer group,
/// until nothing more arrives for `idle` (after at least one fetch round) or
/// `deadline` passes. An absent topic reads as empty.
pub fn read_all(
    bootstrap: &str,
    topic: &str,
    idle: Duration,
    deadline: Duration,
) -> Result<Vec<TopicMessage>, KafkaError> {
    use rdkafka::consumer::{BaseConsumer, Consumer};
    use rdkafka::message::Message;
    let consumer: BaseConsumer = ClientConfig::new()
        .set("bootstrap.servers", bootstrap)
        .set(
            "group.id",
            format!("firebreak-read-all-{}", std::process::id()),
        )
        .set("auto.offset.reset", "earliest")
        .set("enable.auto.commit", "false")
        .set("fetch.wait.max.ms", "50")
        .create()?;
    let md = consumer.fetch_metadata(Some(topic), Duration::from_secs(5))?;
    let mut list = rdkafka::TopicPartitionList::new();
    for t in md
        .topics()
        .iter()
        .filter(|t| t.name() == topic && t.error().is_none())
    {
        for p in t.partitions() {
            list.add_partition_offset(topic, p.id(), rdkafka::Offset::Beginning)?;
        }
    }
    if list.count() == 0 {
        return Ok(Vec::new());
    }
    consumer.assign(&list)?;
    let started = std::time::Instant::now();
    let mut last = std::time::Instant::now();
    let mut out = Vec::new();
    while started.elapsed() < deadline && last.elapsed() < idle {
        let Some(msg) = consumer.poll(Duration::from_millis(50)) else {
            continue;
        };
        let msg = msg?;
        last = std::time::Instant::now();
        out.push(TopicMessage {
            key: String::from_utf8_lossy(msg.key().unwrap_or_default()).into_owned(),
            payload: msg.payload().unwrap_or_default().to_vec(),
            timestamp_ms: msg.timestamp().to_millis(),
        });
    }
    Ok(out)
}

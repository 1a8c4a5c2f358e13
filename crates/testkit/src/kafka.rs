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

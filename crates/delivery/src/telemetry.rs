//! A best-effort keyed producer for telemetry topics (`firebreak.signals`): records are
//! handed to librdkafka's queue without waiting and delivered in the background
//! (acks=1, batched, lz4). Nothing here is a decision: when the broker is unreachable
//! and the bounded queue is full, [`Publisher::send`] refuses at once and the caller
//! counts the drop (decisions go through the outbox, which never drops).

use std::time::Duration;

use rdkafka::admin::{NewTopic, TopicReplication};
use rdkafka::error::RDKafkaErrorCode;
use rdkafka::producer::{BaseRecord, DefaultProducerContext, Producer, ThreadedProducer};

use crate::compacted::{KafkaError, SharedConfig};

/// Why a record was not queued.
#[derive(Debug, thiserror::Error)]
pub enum Refused {
    /// The local queue is full (the broker is slow or unreachable).
    #[error("the producer's queue is full")]
    QueueFull,
    /// Any other client error (record too large, unknown topic...).
    #[error(transparent)]
    Kafka(KafkaError),
}

/// Creates `topic` (`cleanup.policy=delete`, `retention_ms`); an existing topic is left
/// as it is.
pub async fn ensure_topic(
    config: &SharedConfig,
    topic: &str,
    partitions: i32,
    replication: i32,
    retention_ms: u64,
) -> Result<(), KafkaError> {
    let retention = retention_ms.to_string();
    let new = NewTopic::new(topic, partitions, TopicReplication::Fixed(replication))
        .set("cleanup.policy", "delete")
        .set("retention.ms", &retention);
    crate::compacted::create_topic(config, &new).await
}

/// The producer.
pub struct Publisher {
    producer: ThreadedProducer<DefaultProducerContext>,
    topic: String,
}

impl std::fmt::Debug for Publisher {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Publisher")
            .field("topic", &self.topic)
            .finish_non_exhaustive()
    }
}

impl Publisher {
    /// A producer to `topic` holding at most `queue_kbytes` of undelivered records.
    pub fn new(config: &SharedConfig, topic: &str, queue_kbytes: u32) -> Result<Self, KafkaError> {
        let mut cc = config.client();
        cc.set("acks", "1")
            .set("linger.ms", "50")
            .set("compression.type", "lz4")
            .set(
                "queue.buffering.max.kbytes",
                queue_kbytes.max(1).to_string(),
            )
            .set("message.timeout.ms", "60000")
            .set("client.id", "firebreak-telemetry");
        for (k, v) in &config.properties {
            cc.set(k, v);
        }
        Ok(Publisher {
            producer: cc.create()?,
            topic: topic.to_owned(),
        })
    }

    /// The topic.
    pub fn topic(&self) -> &str {
        &self.topic
    }

    /// Queues `payload` under `key` (records of one key stay in order). Never blocks.
    pub fn send(&self, key: &str, payload: &[u8]) -> Result<(), Refused> {
        let rec = BaseRecord::<str, [u8]>::to(&self.topic)
            .key(key)
            .payload(payload);
        self.producer.send(rec).map_err(|(e, _)| match e {
            KafkaError::MessageProduction(RDKafkaErrorCode::QueueFull) => Refused::QueueFull,
            e => Refused::Kafka(e),
        })
    }

    /// Waits up to `timeout` for what is queued to be delivered.
    pub fn flush(&self, timeout: Duration) -> Result<(), KafkaError> {
        self.producer.flush(timeout)
    }
}

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

/// One record read by a [`Tail`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TailRecord {
    /// Its topic.
    pub topic: String,
    /// Its partition.
    pub partition: i32,
    /// Its offset.
    pub offset: i64,
    /// Its key.
    pub key: Option<Vec<u8>>,
    /// Its value (empty for a tombstone).
    pub payload: Vec<u8>,
}

/// Reads every partition of several topics from the beginning, without a consumer
/// group (so every reader sees every record: several coordinators each see every
/// stream). A topic that does not exist yet is picked up once it appears. Blocking:
/// run it on a dedicated thread.
pub struct Tail {
    consumer: rdkafka::consumer::BaseConsumer,
    topics: Vec<String>,
    assigned: std::collections::BTreeSet<String>,
    checked: Option<std::time::Instant>,
}

impl std::fmt::Debug for Tail {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Tail")
            .field("topics", &self.topics)
            .field("assigned", &self.assigned)
            .finish_non_exhaustive()
    }
}

/// How often a tail looks for topics it has not found yet.
const TAIL_RECHECK: Duration = Duration::from_secs(1);

impl Tail {
    /// A tail of `topics` (nothing is read before the first [`Tail::poll`]).
    pub fn open(config: &SharedConfig, topics: &[&str]) -> Result<Tail, KafkaError> {
        let mut cc = config.client();
        // librdkafka wants a group id; the tail never subscribes or commits.
        cc.set(
            "group.id",
            format!("firebreak-tail-{}", crate::compacted::unique_id()),
        )
        .set("enable.auto.commit", "false")
        .set("enable.auto.offset.store", "false")
        .set("auto.offset.reset", "earliest")
        .set("fetch.wait.max.ms", "100")
        .set("client.id", "firebreak-tail");
        for (k, v) in &config.properties {
            cc.set(k, v);
        }
        Ok(Tail {
            consumer: cc.create()?,
            topics: topics.iter().map(|t| (*t).to_owned()).collect(),
            assigned: Default::default(),
            checked: None,
        })
    }

    /// Whether every topic has been found and assigned.
    pub fn all_assigned(&self) -> bool {
        self.assigned.len() == self.topics.len()
    }

    fn assign_new(&mut self) {
        use rdkafka::consumer::Consumer;
        if self.all_assigned() || self.checked.is_some_and(|t| t.elapsed() < TAIL_RECHECK) {
            return;
        }
        self.checked = Some(std::time::Instant::now());
        let Ok(md) = self.consumer.fetch_metadata(None, Duration::from_secs(5)) else {
            return;
        };
        let mut list = rdkafka::TopicPartitionList::new();
        for t in md.topics() {
            if !self.topics.iter().any(|n| n == t.name())
                || self.assigned.contains(t.name())
                || t.error().is_some()
                || t.partitions().is_empty()
            {
                continue;
            }
            for p in t.partitions() {
                let _ = list.add_partition_offset(t.name(), p.id(), rdkafka::Offset::Beginning);
            }
            self.assigned.insert(t.name().to_owned());
        }
        if list.count() > 0
            && let Err(e) = self.consumer.incremental_assign(&list)
        {
            tracing::warn!(error = %e, "tail: assigning partitions");
        }
    }

    /// The next record, waiting up to `timeout`; `None` when none came.
    pub fn poll(&mut self, timeout: Duration) -> Option<Result<TailRecord, KafkaError>> {
        use rdkafka::message::Message;
        self.assign_new();
        let m = match self.consumer.poll(timeout)? {
            Ok(m) => m,
            Err(e) => return Some(Err(e)),
        };
        Some(Ok(TailRecord {
            topic: m.topic().to_owned(),
            partition: m.partition(),
            offset: m.offset(),
            key: m.key().map(<[u8]>::to_vec),
            payload: m.payload().map(<[u8]>::to_vec).unwrap_or_default(),
        }))
    }
}

/// Active/standby among several processes through a consumer group on a one-partition
/// topic: the member the group assigns partition 0 is active. Kafka's group protocol
/// does the election (no home-made consensus); a dead member's turn passes after the
/// session timeout. Nothing is read: the group is only used for its assignment.
pub struct Leadership {
    active: std::sync::Arc<std::sync::atomic::AtomicBool>,
    joined: std::sync::Arc<std::sync::atomic::AtomicBool>,
    stop: std::sync::Arc<std::sync::atomic::AtomicBool>,
    thread: Option<std::thread::JoinHandle<()>>,
}

impl std::fmt::Debug for Leadership {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Leadership")
            .field("active", &self.is_active())
            .finish_non_exhaustive()
    }
}

struct LeaderContext {
    active: std::sync::Arc<std::sync::atomic::AtomicBool>,
    joined: std::sync::Arc<std::sync::atomic::AtomicBool>,
}

impl rdkafka::ClientContext for LeaderContext {}

impl rdkafka::consumer::ConsumerContext for LeaderContext {
    fn pre_rebalance(
        &self,
        _: &rdkafka::consumer::BaseConsumer<Self>,
        r: &rdkafka::consumer::Rebalance<'_>,
    ) {
        if let rdkafka::consumer::Rebalance::Revoke(_) = r {
            self.active
                .store(false, std::sync::atomic::Ordering::Release);
            tracing::info!("leadership: standby");
        }
    }

    fn post_rebalance(
        &self,
        _: &rdkafka::consumer::BaseConsumer<Self>,
        r: &rdkafka::consumer::Rebalance<'_>,
    ) {
        if let rdkafka::consumer::Rebalance::Assign(tpl) = r {
            self.joined
                .store(true, std::sync::atomic::Ordering::Release);
            if tpl.count() > 0 {
                self.active
                    .store(true, std::sync::atomic::Ordering::Release);
                tracing::info!("leadership: active");
            } else {
                tracing::info!("leadership: standby");
            }
        }
    }
}

impl Leadership {
    /// Joins group `group` on `topic` (which must exist, with one partition).
    pub fn join(
        config: &SharedConfig,
        topic: &str,
        group: &str,
        session_timeout: Duration,
    ) -> Result<Leadership, KafkaError> {
        use rdkafka::consumer::{BaseConsumer, Consumer};
        use std::sync::atomic::{AtomicBool, Ordering};
        let active = std::sync::Arc::new(AtomicBool::new(false));
        let joined = std::sync::Arc::new(AtomicBool::new(false));
        let mut cc = config.client();
        cc.set("group.id", group)
            .set("enable.auto.commit", "false")
            .set(
                "session.timeout.ms",
                session_timeout.as_millis().to_string(),
            )
            .set(
                "heartbeat.interval.ms",
                (session_timeout.as_millis() / 4).max(100).to_string(),
            )
            .set("client.id", "firebreak-leadership");
        for (k, v) in &config.properties {
            cc.set(k, v);
        }
        let consumer: BaseConsumer<LeaderContext> = cc.create_with_context(LeaderContext {
            active: active.clone(),
            joined: joined.clone(),
        })?;
        consumer.subscribe(&[topic])?;
        let stop = std::sync::Arc::new(AtomicBool::new(false));
        let flag = stop.clone();
        let thread = std::thread::Builder::new()
            .name("leadership".into())
            .spawn(move || {
                while !flag.load(Ordering::Acquire) {
                    // Records are ignored; only the group's callbacks matter.
                    let _ = consumer.poll(Duration::from_millis(100));
                }
                drop(consumer);
            })
            .map_err(|e| KafkaError::ClientCreation(e.to_string()))?;
        Ok(Leadership {
            active,
            joined,
            stop,
            thread: Some(thread),
        })
    }

    /// Set once the group gave this member its first assignment (active or standby).
    pub fn joined(&self) -> std::sync::Arc<std::sync::atomic::AtomicBool> {
        self.joined.clone()
    }

    /// Whether this process is the active one now.
    pub fn is_active(&self) -> bool {
        self.active.load(std::sync::atomic::Ordering::Acquire)
    }
}

impl Drop for Leadership {
    fn drop(&mut self) {
        self.stop.store(true, std::sync::atomic::Ordering::Release);
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

//! Fleet-shared state on compacted topics (`firebreak.banks`, `firebreak.policy`):
//! keyed records and tombstones written with acks=all by an idempotent producer, each
//! carrying its schema version in a header; read back by every worker from given
//! offsets on all partitions (manual assignment, no consumer group: every worker reads
//! everything).
//!
//! **Catch-up** is detected with markers, not the high watermark (tansu reports it
//! wrongly): [`Reader::start_catch_up`] produces a marker record unique to this reader
//! and round to every partition, and the reader is caught up once it has read every
//! one of them back ([`Event::CaughtUp`]): everything written before the markers has
//! then been read. Markers of other readers are skipped. The offsets the markers got
//! also give the reader's lag ([`Reader::lag`]): the records between where it is and
//! the last round's markers.
//!
//! The reader is blocking (librdkafka's poll): run it on a dedicated thread.

use std::collections::{BTreeMap, BTreeSet};
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use rdkafka::admin::{AdminClient, AdminOptions, NewTopic, TopicReplication};
use rdkafka::client::DefaultClientContext;
use rdkafka::consumer::{BaseConsumer, Consumer};
use rdkafka::error::RDKafkaErrorCode;
use rdkafka::message::{Header, Headers, Message, OwnedHeaders};
use rdkafka::producer::{FutureProducer, FutureRecord};
use rdkafka::{ClientConfig, Offset, TopicPartitionList};

/// The client's error type.
pub use rdkafka::error::KafkaError;

/// The header carrying a record's schema version (decimal).
pub const SCHEMA_HEADER: &str = "firebreak-schema";
/// The header marking a catch-up marker (value: `reader-id/round`).
pub const MARKER_HEADER: &str = "firebreak-marker";
/// The key prefix of markers (and of their tombstones).
const MARKER_KEY: &str = "__firebreak.marker/";

/// Connection settings for the shared topics.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct SharedConfig {
    /// `host:port,...`
    pub bootstrap_servers: String,
    /// Further librdkafka properties, passed through to producers, consumers and the
    /// admin client: `security.protocol`, `sasl.*`, `ssl.*`, ...
    pub properties: BTreeMap<String, String>,
}

impl SharedConfig {
    /// Settings for brokers at `bootstrap_servers`.
    pub fn new(bootstrap_servers: impl Into<String>) -> Self {
        SharedConfig {
            bootstrap_servers: bootstrap_servers.into(),
            properties: BTreeMap::new(),
        }
    }

    pub(crate) fn client(&self) -> ClientConfig {
        let mut cc = ClientConfig::new();
        cc.set("bootstrap.servers", &self.bootstrap_servers);
        for (k, v) in &self.properties {
            cc.set(k, v);
        }
        cc
    }

    fn producer(&self) -> Result<FutureProducer, KafkaError> {
        let mut cc = self.client();
        cc.set("enable.idempotence", "true")
            .set("acks", "all")
            .set("linger.ms", "0")
            .set("message.timeout.ms", "30000")
            .set("client.id", "firebreak-shared");
        for (k, v) in &self.properties {
            cc.set(k, v);
        }
        cc.create()
    }
}

/// Creates `topic` with `partitions` partitions and `cleanup.policy=compact`
/// (`replication`: the replication factor, -1 for the broker's default); an existing
/// topic is left as it is.
pub async fn ensure_topic(
    config: &SharedConfig,
    topic: &str,
    partitions: i32,
    replication: i32,
) -> Result<(), KafkaError> {
    let new = NewTopic::new(topic, partitions, TopicReplication::Fixed(replication))
        .set("cleanup.policy", "compact");
    create_topic(config, &new).await
}

/// Creates `new`; an existing topic is left as it is.
pub(crate) async fn create_topic(
    config: &SharedConfig,
    new: &NewTopic<'_>,
) -> Result<(), KafkaError> {
    let admin: AdminClient<DefaultClientContext> = config.client().create()?;
    let results = admin
        .create_topics(
            [new],
            &AdminOptions::new().operation_timeout(Some(Duration::from_secs(10))),
        )
        .await?;
    for r in results {
        match r {
            Ok(_) | Err((_, RDKafkaErrorCode::TopicAlreadyExists)) => {}
            Err((_, code)) => return Err(KafkaError::AdminOp(code)),
        }
    }
    Ok(())
}

/// Where a record was written.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Written {
    /// Its partition.
    pub partition: i32,
    /// Its offset.
    pub offset: i64,
}

/// Writes keyed records and tombstones to one compacted topic (acks=all, idempotent).
pub struct Writer {
    producer: FutureProducer,
    topic: String,
}

impl std::fmt::Debug for Writer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Writer")
            .field("topic", &self.topic)
            .finish_non_exhaustive()
    }
}

impl Writer {
    /// A writer to `topic` (no connection is made until the first write).
    pub fn new(config: &SharedConfig, topic: &str) -> Result<Writer, KafkaError> {
        Ok(Writer {
            producer: config.producer()?,
            topic: topic.to_owned(),
        })
    }

    /// The topic.
    pub fn topic(&self) -> &str {
        &self.topic
    }

    /// Writes `value` under `key` with schema version `schema`; returns once the
    /// brokers acknowledged it.
    pub async fn put(&self, key: &str, schema: u32, value: &[u8]) -> Result<Written, KafkaError> {
        self.send(key, schema, Some(value)).await
    }

    /// Writes a tombstone for `key` (compaction then drops the key).
    pub async fn delete(&self, key: &str, schema: u32) -> Result<Written, KafkaError> {
        self.send(key, schema, None).await
    }

    async fn send(
        &self,
        key: &str,
        schema: u32,
        value: Option<&[u8]>,
    ) -> Result<Written, KafkaError> {
        let schema = schema.to_string();
        let headers = OwnedHeaders::new().insert(Header {
            key: SCHEMA_HEADER,
            value: Some(schema.as_str()),
        });
        let mut record = FutureRecord::<str, [u8]>::to(&self.topic)
            .key(key)
            .headers(headers);
        if let Some(v) = value {
            record = record.payload(v);
        }
        let d = self
            .producer
            .send(record, Duration::from_secs(30))
            .await
            .map_err(|(e, _)| e)?;
        Ok(Written {
            partition: d.partition,
            offset: d.offset,
        })
    }
}

/// One record read from a shared topic.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SharedRecord {
    /// Its partition.
    pub partition: i32,
    /// Its offset.
    pub offset: i64,
    /// Its key (empty if it has none).
    pub key: Vec<u8>,
    /// The schema header's version; `None` when absent or not a number.
    pub schema: Option<u32>,
    /// The value; `None` for a tombstone.
    pub value: Option<Vec<u8>>,
    /// The record's timestamp (producer create time), Unix ms.
    pub timestamp_ms: Option<i64>,
}

/// What [`Reader::poll`] returns.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Event {
    /// A record (markers are not records).
    Record(SharedRecord),
    /// Every marker of the current round was read back: everything written before
    /// [`Reader::start_catch_up`] has been read.
    CaughtUp,
}

/// Reads every partition of a shared topic from given offsets (see the module doc).
pub struct Reader {
    consumer: BaseConsumer,
    producer: FutureProducer,
    runtime: tokio::runtime::Runtime,
    topic: String,
    partitions: i32,
    id: String,
    round: u64,
    /// Partitions whose marker of the current round was not read back yet.
    pending: BTreeSet<i32>,
    /// The current round's marker offset per partition.
    markers: BTreeMap<i32, i64>,
    /// Per partition, the offset of the next record to read.
    position: BTreeMap<i32, i64>,
}

impl std::fmt::Debug for Reader {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Reader")
            .field("topic", &self.topic)
            .field("id", &self.id)
            .field("position", &self.position)
            .finish_non_exhaustive()
    }
}

pub(crate) fn unique_id() -> String {
    static COUNT: AtomicU64 = AtomicU64::new(0);
    let nanos = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_nanos());
    format!(
        "{}-{nanos:x}-{}",
        std::process::id(),
        COUNT.fetch_add(1, Ordering::Relaxed)
    )
}

fn header<'a>(m: &'a impl Message, name: &str) -> Option<&'a [u8]> {
    let headers = m.headers()?;
    headers.iter().find(|h| h.key == name).and_then(|h| h.value)
}

impl Reader {
    /// Opens `topic` (which must exist) and assigns every partition, each from its
    /// offset in `start` (the next offset to read), from the beginning when absent.
    /// Blocking (reads the topic's metadata, up to `timeout`).
    pub fn open(
        config: &SharedConfig,
        topic: &str,
        start: &BTreeMap<i32, i64>,
        timeout: Duration,
    ) -> Result<Reader, KafkaError> {
        let id = unique_id();
        let mut cc = config.client();
        // A group id is set only because librdkafka wants one; the reader never
        // subscribes or commits, so it never joins the group.
        cc.set("group.id", format!("firebreak-shared-{id}"))
            .set("enable.auto.commit", "false")
            .set("enable.auto.offset.store", "false")
            .set("auto.offset.reset", "earliest")
            .set("fetch.wait.max.ms", "100")
            .set("client.id", "firebreak-shared");
        for (k, v) in &config.properties {
            cc.set(k, v);
        }
        let consumer: BaseConsumer = cc.create()?;
        let metadata = consumer.fetch_metadata(Some(topic), timeout)?;
        let partitions = metadata
            .topics()
            .iter()
            .find(|t| t.name() == topic)
            .filter(|t| t.error().is_none())
            .map_or(0, |t| t.partitions().len() as i32);
        if partitions == 0 {
            return Err(KafkaError::MetadataFetch(
                RDKafkaErrorCode::UnknownTopicOrPartition,
            ));
        }
        let mut list = TopicPartitionList::new();
        let mut position = BTreeMap::new();
        for p in 0..partitions {
            let offset = start.get(&p).copied().unwrap_or(0).max(0);
            list.add_partition_offset(topic, p, Offset::Offset(offset))?;
            position.insert(p, offset);
        }
        consumer.assign(&list)?;
        let runtime = tokio::runtime::Builder::new_current_thread()
            .enable_time()
            .build()
            .map_err(|e| KafkaError::ClientCreation(e.to_string()))?;
        Ok(Reader {
            consumer,
            producer: config.producer()?,
            runtime,
            topic: topic.to_owned(),
            partitions,
            id,
            round: 0,
            pending: BTreeSet::new(),
            markers: BTreeMap::new(),
            position,
        })
    }

    /// The topic's partition count.
    pub fn partitions(&self) -> i32 {
        self.partitions
    }

    /// This reader's unique id (in its markers).
    pub fn id(&self) -> &str {
        &self.id
    }

    /// Per partition, the offset of the next record to read: what a snapshot records.
    pub fn position(&self) -> &BTreeMap<i32, i64> {
        &self.position
    }

    /// Whether the current round's markers are all read back (false before the first
    /// round).
    pub fn caught_up(&self) -> bool {
        self.round > 0 && self.pending.is_empty()
    }

    /// Records between this reader's position and the last round's markers.
    pub fn lag(&self) -> u64 {
        self.markers
            .iter()
            .map(|(p, &m)| {
                let at = self.position.get(p).copied().unwrap_or(0);
                (m + 1 - at).max(0) as u64
            })
            .sum()
    }

    /// Starts a catch-up round: produces a marker to every partition (acks=all) and
    /// waits for the brokers' acknowledgements (blocking). [`Reader::poll`] returns
    /// [`Event::CaughtUp`] once every one of them is read back.
    pub fn start_catch_up(&mut self) -> Result<(), KafkaError> {
        self.round += 1;
        let value = format!("{}/{}", self.id, self.round);
        let key = format!("{MARKER_KEY}{}", self.id);
        let mut markers = BTreeMap::new();
        let topic = self.topic.clone();
        for p in 0..self.partitions {
            let record = FutureRecord::<str, str>::to(&topic)
                .partition(p)
                .key(&key)
                .payload(&value)
                .headers(OwnedHeaders::new().insert(Header {
                    key: MARKER_HEADER,
                    value: Some(value.as_str()),
                }));
            let d = self
                .runtime
                .block_on(self.producer.send(record, Duration::from_secs(30)))
                .map_err(|(e, _)| e)?;
            markers.insert(p, d.offset);
        }
        self.pending = (0..self.partitions).collect();
        // A marker this reader already read past cannot be read back: none can be, as
        // it was just written after everything read.
        self.markers = markers;
        Ok(())
    }

    /// The next record, or [`Event::CaughtUp`]; `None` when nothing arrived within
    /// `timeout` (markers do not count as arrivals to the caller but do end the wait).
    pub fn poll(&mut self, timeout: Duration) -> Option<Result<Event, KafkaError>> {
        let m = match self.consumer.poll(timeout)? {
            Ok(m) => m,
            Err(e) => return Some(Err(e)),
        };
        let partition = m.partition();
        self.position.insert(partition, m.offset() + 1);
        if let Some(marker) = header(&m, MARKER_HEADER) {
            let mine = format!("{}/{}", self.id, self.round);
            if marker == mine.as_bytes()
                && self.pending.remove(&partition)
                && self.pending.is_empty()
            {
                return Some(Ok(Event::CaughtUp));
            }
            return None;
        }
        if m.key()
            .is_some_and(|k| k.starts_with(MARKER_KEY.as_bytes()))
        {
            // A marker's tombstone.
            return None;
        }
        let schema = header(&m, SCHEMA_HEADER)
            .and_then(|v| std::str::from_utf8(v).ok())
            .and_then(|v| v.parse().ok());
        Some(Ok(Event::Record(SharedRecord {
            partition,
            offset: m.offset(),
            key: m.key().unwrap_or_default().to_vec(),
            schema,
            value: m.payload().map(<[u8]>::to_vec),
            timestamp_ms: m.timestamp().to_millis(),
        })))
    }
}

impl Drop for Reader {
    /// Tombstones this reader's marker key on every partition it wrote one to, so
    /// compaction drops it (best effort).
    fn drop(&mut self) {
        if self.round == 0 {
            return;
        }
        let key = format!("{MARKER_KEY}{}", self.id);
        for p in 0..self.partitions {
            let record = FutureRecord::<str, [u8]>::to(&self.topic)
                .partition(p)
                .key(&key);
            let _ = self
                .runtime
                .block_on(self.producer.send(record, Duration::from_secs(2)));
        }
    }
}

//! Fleet mode's Kafka side: the topics, the producer behind every worker's push hook,
//! the consumer group that assigns streams, and the manual readers of the
//! co-partitioned topics.
//!
//! `firebreak.streams` (registrations, compacted), `firebreak.segments` (pushed
//! bytes) and `firebreak.stream-state` (each stream's state, compacted) have the same
//! partition count and every record is keyed by stream id, so one stream's records
//! sit in partition p of each. Workers form one consumer group on `firebreak.streams`
//! only ([`Membership`]); the worker assigned partition p reads partition p of
//! `firebreak.segments` itself ([`SegmentReader`], a consumer without a group,
//! assigned by hand) and restores from partition p of `firebreak.stream-state`
//! ([`StateView`], which every worker reads whole for the fleet view). Group
//! membership on one topic plus manual reads makes "one owner of p in all three"
//! hold by construction, with any assignor librdkafka has (so cooperative-sticky,
//! which moves as few partitions as possible), where a co-partitioning assignor
//! would have to be written and kept in step with librdkafka's protocol.
//!
//! Every record carries a schema version header (`fb-v`). Segment records carry the
//! tenant, sequence number and chunk (`i/n`) in headers and the bytes as the value;
//! segments above the message limit are chunked ([`chunk`]) and reassembled by the
//! owner.

pub mod chunk;

use std::collections::{BTreeMap, HashMap, HashSet};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Condvar, Mutex, mpsc};
use std::time::{Duration, Instant};

use rdkafka::admin::{AdminClient, AdminOptions, NewTopic, TopicReplication};
use rdkafka::client::{ClientContext, DefaultClientContext};
use rdkafka::config::ClientConfig;
use rdkafka::consumer::{BaseConsumer, Consumer, ConsumerContext, Rebalance};
use rdkafka::error::{KafkaError, RDKafkaErrorCode};
use rdkafka::message::{Header, Headers, Message, OwnedHeaders};
use rdkafka::producer::{FutureProducer, FutureRecord};
use rdkafka::topic_partition_list::{Offset, TopicPartitionList};

/// The schema version every fleet record carries in its `fb-v` header.
pub const SCHEMA_VERSION: &str = "1";
/// Header: schema version.
pub const H_VERSION: &str = "fb-v";
/// Header: record kind (`segment`, `end`).
pub const H_KIND: &str = "fb-kind";
/// Header: the stream's tenant.
pub const H_TENANT: &str = "fb-tenant";
/// Header: the segment's sequence number.
pub const H_SEQ: &str = "fb-seq";
/// Header: `i/n`, the chunk.
pub const H_CHUNK: &str = "fb-chunk";
/// Header: when the receiving worker accepted the segment (ms since the Unix epoch).
pub const H_ACCEPTED: &str = "fb-accepted-ms";

/// Fleet settings (the `[fleet]` section, typed).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FleetConfig {
    /// Bootstrap servers.
    pub brokers: String,
    /// Registrations (compacted; the group's topic).
    pub streams_topic: String,
    /// Pushed segments.
    pub segments_topic: String,
    /// Stream state (compacted).
    pub state_topic: String,
    /// The workers' consumer group.
    pub group_id: String,
    /// Partitions of each topic when this worker creates them.
    pub partitions: i32,
    /// Replication factor when this worker creates the topics.
    pub replication: i32,
    /// Retention of `segments`, ms.
    pub segment_retention_ms: u64,
    /// Largest record value; larger segments are chunked.
    pub max_message_bytes: usize,
    /// The group's session timeout (a dead worker's partitions move after it).
    pub session_timeout_ms: u32,
    /// `partition.assignment.strategy`.
    pub assignment: String,
    /// How often an owner publishes its streams' state (and the segment position).
    pub checkpoint_every: Duration,
    /// librdkafka security properties (`security.*`, `sasl.*`, `ssl.*`).
    pub properties: BTreeMap<String, String>,
    /// This worker (in state records and markers).
    pub worker_id: String,
}

/// What went wrong talking to the fleet's brokers.
#[derive(Debug, thiserror::Error)]
pub enum FleetError {
    /// librdkafka.
    #[error("kafka: {0}")]
    Kafka(#[from] KafkaError),
    /// Anything else (topics of unequal partition counts, a timeout...).
    #[error("{0}")]
    Other(String),
}

fn client(cfg: &FleetConfig) -> ClientConfig {
    let mut c = ClientConfig::new();
    c.set("bootstrap.servers", &cfg.brokers)
        .set("client.id", format!("firebreak-{}", cfg.worker_id));
    for (k, v) in &cfg.properties {
        c.set(k, v);
    }
    c
}

/// Creates the three topics (same partition count; existing ones are kept) and checks
/// their partition counts are equal. Returns the partition count.
pub async fn ensure_topics(cfg: &FleetConfig) -> Result<i32, FleetError> {
    let admin: AdminClient<DefaultClientContext> = client(cfg).create()?;
    let retention = cfg.segment_retention_ms.to_string();
    let max = (cfg.max_message_bytes + (64 << 10)).to_string();
    let repl = || TopicReplication::Fixed(cfg.replication);
    let topics = [
        NewTopic::new(&cfg.streams_topic, cfg.partitions, repl())
            .set("cleanup.policy", "compact")
            .set("max.message.bytes", &max),
        NewTopic::new(&cfg.segments_topic, cfg.partitions, repl())
            .set("cleanup.policy", "delete")
            .set("retention.ms", &retention)
            .set("max.message.bytes", &max),
        NewTopic::new(&cfg.state_topic, cfg.partitions, repl())
            .set("cleanup.policy", "compact")
            .set("max.message.bytes", &max),
    ];
    let opts = AdminOptions::new().operation_timeout(Some(Duration::from_secs(15)));
    for r in admin.create_topics(&topics, &opts).await? {
        match r {
            Ok(_) | Err((_, RDKafkaErrorCode::TopicAlreadyExists)) => {}
            Err((name, code)) => return Err(FleetError::Other(format!("creating {name}: {code}"))),
        }
    }
    let probe: BaseConsumer = client(cfg).create()?;
    let cfg2 = cfg.clone();
    let counts = tokio::task::spawn_blocking(move || -> Result<Vec<usize>, FleetError> {
        [&cfg2.streams_topic, &cfg2.segments_topic, &cfg2.state_topic]
            .iter()
            .map(|t| partitions_of(&probe, t, Duration::from_secs(15)))
            .collect()
    })
    .await
    .map_err(|e| FleetError::Other(e.to_string()))??;
    if counts.iter().any(|&c| c != counts[0]) || counts[0] == 0 {
        return Err(FleetError::Other(format!(
            "the fleet's topics must have equal partition counts (streams, segments, stream-state: {counts:?})"
        )));
    }
    Ok(counts[0] as i32)
}

/// The partition count of `topic` (retried until `wait` passes: a new topic's metadata
/// can lag its creation).
fn partitions_of(c: &BaseConsumer, topic: &str, wait: Duration) -> Result<usize, FleetError> {
    let started = Instant::now();
    loop {
        let md = c.fetch_metadata(Some(topic), Duration::from_secs(5))?;
        let n = md
            .topics()
            .iter()
            .find(|t| t.name() == topic && t.error().is_none())
            .map_or(0, |t| t.partitions().len());
        if n > 0 {
            return Ok(n);
        }
        if started.elapsed() > wait {
            return Err(FleetError::Other(format!("{topic}: no partitions")));
        }
        std::thread::sleep(Duration::from_millis(200));
    }
}

/// Where a record landed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Delivered {
    /// Partition.
    pub partition: i32,
    /// Offset (of the last chunk, for a chunked segment).
    pub offset: i64,
}

/// The producer behind the push hook, registrations and state records: acks=all,
/// idempotent, keyed by stream id.
#[derive(Clone)]
pub struct FleetProducer {
    inner: FutureProducer,
    cfg: Arc<FleetConfig>,
}

impl std::fmt::Debug for FleetProducer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("FleetProducer").finish_non_exhaustive()
    }
}

fn versioned() -> OwnedHeaders {
    OwnedHeaders::new().insert(Header {
        key: H_VERSION,
        value: Some(SCHEMA_VERSION),
    })
}

impl FleetProducer {
    /// Creates the producer.
    pub fn new(cfg: &FleetConfig) -> Result<FleetProducer, FleetError> {
        let inner: FutureProducer = client(cfg)
            .set("acks", "all")
            .set("enable.idempotence", "true")
            .set("linger.ms", "1")
            .set("message.timeout.ms", "30000")
            .set("partitioner", "consistent_random")
            .set(
                "message.max.bytes",
                (cfg.max_message_bytes + (64 << 10)).to_string(),
            )
            .create()?;
        Ok(FleetProducer {
            inner,
            cfg: Arc::new(cfg.clone()),
        })
    }

    /// The settings.
    pub fn config(&self) -> &FleetConfig {
        &self.cfg
    }

    async fn send_all(
        &self,
        topic: &str,
        key: &str,
        parts: Vec<(OwnedHeaders, Option<&[u8]>)>,
        partition: Option<i32>,
    ) -> Result<Delivered, FleetError> {
        let mut pending = Vec::with_capacity(parts.len());
        for (headers, value) in parts {
            let mut rec = FutureRecord::<str, [u8]>::to(topic)
                .key(key)
                .headers(headers);
            if let Some(v) = value {
                rec = rec.payload(v);
            }
            if let Some(p) = partition {
                rec = rec.partition(p);
            }
            // Enqueued in order (the idempotent producer keeps it); a full local queue
            // is waited out briefly.
            let mut rec = rec;
            let started = Instant::now();
            loop {
                match self.inner.send_result(rec) {
                    Ok(f) => {
                        pending.push(f);
                        break;
                    }
                    Err((KafkaError::MessageProduction(RDKafkaErrorCode::QueueFull), r))
                        if started.elapsed() < Duration::from_secs(10) =>
                    {
                        rec = r;
                        tokio::time::sleep(Duration::from_millis(5)).await;
                    }
                    Err((e, _)) => return Err(e.into()),
                }
            }
        }
        let mut last = None;
        for f in pending {
            match f.await {
                Ok(Ok(d)) => {
                    last = Some(Delivered {
                        partition: d.partition,
                        offset: d.offset,
                    })
                }
                Ok(Err((e, _))) => return Err(e.into()),
                Err(_) => return Err(FleetError::Other("producer closed".into())),
            }
        }
        last.ok_or_else(|| FleetError::Other("nothing sent".into()))
    }

    /// Produces segment `seq` of `stream` to the segments topic (chunked if larger than
    /// the message limit) and returns once the broker acknowledged every chunk.
    pub async fn segment(
        &self,
        stream: &str,
        tenant: &str,
        seq: u64,
        bytes: &[u8],
        accepted_ms: u64,
    ) -> Result<Delivered, FleetError> {
        let parts = chunk::split(bytes, self.cfg.max_message_bytes);
        let n = parts.len();
        let (seq_s, accepted) = (seq.to_string(), accepted_ms.to_string());
        let records = parts
            .into_iter()
            .enumerate()
            .map(|(i, p)| {
                let c = chunk::header(i, n);
                let h = versioned()
                    .insert(Header {
                        key: H_KIND,
                        value: Some("segment"),
                    })
                    .insert(Header {
                        key: H_TENANT,
                        value: Some(tenant),
                    })
                    .insert(Header {
                        key: H_SEQ,
                        value: Some(seq_s.as_str()),
                    })
                    .insert(Header {
                        key: H_CHUNK,
                        value: Some(c.as_str()),
                    })
                    .insert(Header {
                        key: H_ACCEPTED,
                        value: Some(accepted.as_str()),
                    });
                (h, Some(p))
            })
            .collect();
        self.send_all(&self.cfg.segments_topic.clone(), stream, records, None)
            .await
    }

    /// Produces the end of pushed stream `stream` to the segments topic, after its
    /// segments (so the owner reads it after them).
    pub async fn end(&self, stream: &str, tenant: &str) -> Result<Delivered, FleetError> {
        let h = versioned()
            .insert(Header {
                key: H_KIND,
                value: Some("end"),
            })
            .insert(Header {
                key: H_TENANT,
                value: Some(tenant),
            });
        self.send_all(
            &self.cfg.segments_topic.clone(),
            stream,
            vec![(h, Some(&b""[..]))],
            None,
        )
        .await
    }

    /// Produces a registration (`Some`) or its tombstone (`None`) to the streams topic.
    pub async fn registration(
        &self,
        stream: &str,
        value: Option<&[u8]>,
    ) -> Result<Delivered, FleetError> {
        self.send_all(
            &self.cfg.streams_topic.clone(),
            stream,
            vec![(versioned(), value)],
            None,
        )
        .await
    }

    /// Produces a state record (`None`: a tombstone) keyed `key` to the state topic;
    /// `partition` for keys that are not stream ids (markers, positions).
    pub async fn state(
        &self,
        key: &str,
        value: Option<&[u8]>,
        partition: Option<i32>,
    ) -> Result<Delivered, FleetError> {
        self.send_all(
            &self.cfg.state_topic.clone(),
            key,
            vec![(versioned(), value)],
            partition,
        )
        .await
    }
}

/// Runs a future to completion on the calling (non-async) thread: the fleet's
/// consumer threads wait for producer acknowledgements this way.
pub fn block_on<F: std::future::Future>(f: F) -> F::Output {
    struct Unpark(std::thread::Thread);
    impl std::task::Wake for Unpark {
        fn wake(self: Arc<Self>) {
            self.0.unpark();
        }
    }
    let waker = std::task::Waker::from(Arc::new(Unpark(std::thread::current())));
    let mut cx = std::task::Context::from_waker(&waker);
    let mut f = std::pin::pin!(f);
    loop {
        if let std::task::Poll::Ready(v) = f.as_mut().poll(&mut cx) {
            return v;
        }
        std::thread::park_timeout(Duration::from_millis(50));
    }
}

/// A pushed segment (reassembled) or a stream's end, read by the owner.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum SegmentEvent {
    /// A segment.
    Segment {
        /// Stream id.
        stream: String,
        /// Its tenant.
        tenant: String,
        /// Sequence number.
        seq: u64,
        /// The bytes.
        bytes: Vec<u8>,
        /// When the receiving worker accepted it, ms since the Unix epoch.
        accepted_ms: u64,
    },
    /// No more segments of `stream`.
    End {
        /// Stream id.
        stream: String,
        /// Its tenant.
        tenant: String,
    },
}

/// What the worker does with the fleet's events. Every method may block (they run on
/// the fleet's consumer threads, never on the async runtime).
pub trait FleetHandler: Send + Sync + 'static {
    /// Partitions of the streams topic newly assigned to this worker.
    fn assigned(&self, partitions: &[i32]);
    /// Partitions about to be taken away: stop their streams, publish their state.
    /// The rebalance waits for this to return.
    fn revoked(&self, partitions: &[i32]);
    /// A registration (`None`: a tombstone) of partition `partition`.
    fn registration(&self, partition: i32, stream: &str, value: Option<&[u8]>);
    /// A segment or end of an owned partition.
    fn segment(&self, partition: i32, event: SegmentEvent);
    /// Publish the state of partition `partition`'s streams: every segment before
    /// `position` in the segments topic has been handed to [`FleetHandler::segment`].
    fn checkpoint(&self, partition: i32, position: i64);
}

struct GroupContext {
    handler: Arc<dyn FleetHandler>,
    topic: String,
}

impl ClientContext for GroupContext {}

fn partitions_in(tpl: &TopicPartitionList, topic: &str) -> Vec<i32> {
    let mut v: Vec<i32> = tpl
        .elements()
        .iter()
        .filter(|e| e.topic() == topic)
        .map(|e| e.partition())
        .collect();
    v.sort_unstable();
    v
}

impl ConsumerContext for GroupContext {
    fn pre_rebalance(&self, _: &BaseConsumer<Self>, rebalance: &Rebalance<'_>) {
        if let Rebalance::Revoke(tpl) = rebalance {
            let ps = partitions_in(tpl, &self.topic);
            tracing::info!(partitions = ?ps, "fleet: partitions revoked");
            self.handler.revoked(&ps);
        }
    }

    fn post_rebalance(&self, _: &BaseConsumer<Self>, rebalance: &Rebalance<'_>) {
        match rebalance {
            Rebalance::Assign(tpl) => {
                let ps = partitions_in(tpl, &self.topic);
                tracing::info!(partitions = ?ps, "fleet: partitions assigned");
                self.handler.assigned(&ps);
            }
            Rebalance::Error(e) => tracing::error!(error = %e, "fleet: rebalance error"),
            Rebalance::Revoke(_) => {}
        }
    }
}

/// This worker's membership of the group on the streams topic: a thread polling it,
/// handing rebalances and registrations to the handler. Dropping it (or
/// [`Membership::leave`]) leaves the group: the handler's `revoked` runs first.
pub struct Membership {
    stop: Arc<AtomicBool>,
    thread: Option<std::thread::JoinHandle<()>>,
}

impl std::fmt::Debug for Membership {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Membership").finish_non_exhaustive()
    }
}

impl Membership {
    /// Joins the group.
    pub fn join(
        cfg: &FleetConfig,
        handler: Arc<dyn FleetHandler>,
    ) -> Result<Membership, FleetError> {
        let ctx = GroupContext {
            handler: handler.clone(),
            topic: cfg.streams_topic.clone(),
        };
        let consumer: BaseConsumer<GroupContext> = client(cfg)
            .set("group.id", &cfg.group_id)
            .set("enable.auto.commit", "false")
            .set("auto.offset.reset", "earliest")
            .set("enable.partition.eof", "false")
            .set("session.timeout.ms", cfg.session_timeout_ms.to_string())
            .set(
                "heartbeat.interval.ms",
                (cfg.session_timeout_ms / 4).max(100).to_string(),
            )
            .set("partition.assignment.strategy", &cfg.assignment)
            .set("topic.metadata.refresh.interval.ms", "5000")
            .create_with_context(ctx)?;
        consumer.subscribe(&[&cfg.streams_topic])?;
        let stop = Arc::new(AtomicBool::new(false));
        let flag = stop.clone();
        let thread = std::thread::Builder::new()
            .name("fleet-group".into())
            .spawn(move || {
                while !flag.load(Ordering::Acquire) {
                    match consumer.poll(Duration::from_millis(100)) {
                        Some(Ok(m)) => {
                            let key = m.key().map(String::from_utf8_lossy);
                            if let Some(key) = key {
                                handler.registration(m.partition(), &key, m.payload());
                            }
                        }
                        Some(Err(e)) => tracing::warn!(error = %e, "fleet: group consumer"),
                        None => {}
                    }
                }
                // Dropping the consumer leaves the group, running the revocation.
                drop(consumer);
                tracing::info!("fleet: left the group");
            })
            .map_err(|e| FleetError::Other(e.to_string()))?;
        Ok(Membership {
            stop,
            thread: Some(thread),
        })
    }

    /// Leaves the group (blocking until the revocation ran).
    pub fn leave(&mut self) {
        self.stop.store(true, Ordering::Release);
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

impl Drop for Membership {
    fn drop(&mut self) {
        self.leave();
    }
}

enum ReaderCommand {
    Add(i32, i64),
    Remove(i32, mpsc::Sender<Option<i64>>),
    Stop,
}

/// Reads the owned partitions of the segments topic (no group: assigned by hand),
/// reassembles chunks, hands segments to the handler and checkpoints every
/// `checkpoint_every`.
pub struct SegmentReader {
    tx: mpsc::Sender<ReaderCommand>,
    thread: Mutex<Option<std::thread::JoinHandle<()>>>,
}

impl std::fmt::Debug for SegmentReader {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SegmentReader").finish_non_exhaustive()
    }
}

fn header_str<'a>(m: &'a impl Message, key: &str) -> Option<&'a str> {
    m.headers()?
        .iter()
        .find(|h| h.key == key)
        .and_then(|h| h.value)
        .and_then(|v| std::str::from_utf8(v).ok())
}

struct ReaderPartition {
    next: i64,
    chunks: chunk::Reassembler,
}

impl SegmentReader {
    /// Starts the reader with no partition.
    pub fn start(
        cfg: &FleetConfig,
        handler: Arc<dyn FleetHandler>,
    ) -> Result<SegmentReader, FleetError> {
        let consumer: BaseConsumer = client(cfg)
            .set(
                "group.id",
                format!("{}-segments-{}", cfg.group_id, cfg.worker_id),
            )
            .set("enable.auto.commit", "false")
            .set("enable.partition.eof", "false")
            .set("auto.offset.reset", "earliest")
            .set("fetch.wait.max.ms", "20")
            .create()?;
        let (tx, rx) = mpsc::channel();
        let topic = cfg.segments_topic.clone();
        let every = cfg.checkpoint_every;
        let thread = std::thread::Builder::new()
            .name("fleet-segments".into())
            .spawn(move || {
                let mut owned: BTreeMap<i32, ReaderPartition> = BTreeMap::new();
                let assign = |owned: &BTreeMap<i32, ReaderPartition>| {
                    let mut tpl = TopicPartitionList::new();
                    for (&p, st) in owned {
                        let _ = tpl.add_partition_offset(&topic, p, Offset::Offset(st.next));
                    }
                    if let Err(e) = consumer.assign(&tpl) {
                        tracing::error!(error = %e, "fleet: assigning segment partitions");
                    }
                };
                let mut last_checkpoint = Instant::now();
                loop {
                    let mut changed = false;
                    loop {
                        match rx.try_recv() {
                            Ok(ReaderCommand::Add(p, at)) => {
                                owned.insert(
                                    p,
                                    ReaderPartition {
                                        next: at,
                                        chunks: chunk::Reassembler::new(),
                                    },
                                );
                                changed = true;
                            }
                            Ok(ReaderCommand::Remove(p, reply)) => {
                                let pos = owned.remove(&p).map(|st| {
                                    st.chunks
                                        .oldest_pending()
                                        .map_or(st.next, |o| o.min(st.next))
                                });
                                assign(&owned);
                                let _ = reply.send(pos);
                            }
                            Ok(ReaderCommand::Stop) | Err(mpsc::TryRecvError::Disconnected) => {
                                return;
                            }
                            Err(mpsc::TryRecvError::Empty) => break,
                        }
                    }
                    if changed {
                        assign(&owned);
                    }
                    if owned.is_empty() {
                        std::thread::sleep(Duration::from_millis(20));
                    } else if let Some(r) = consumer.poll(Duration::from_millis(50)) {
                        match r {
                            Ok(m) => Self::on_message(&m, &mut owned, handler.as_ref()),
                            Err(e) => tracing::warn!(error = %e, "fleet: segment reader"),
                        }
                    }
                    if last_checkpoint.elapsed() >= every {
                        last_checkpoint = Instant::now();
                        for (&p, st) in &owned {
                            let pos = st
                                .chunks
                                .oldest_pending()
                                .map_or(st.next, |o| o.min(st.next));
                            handler.checkpoint(p, pos);
                        }
                    }
                }
            })
            .map_err(|e| FleetError::Other(e.to_string()))?;
        Ok(SegmentReader {
            tx,
            thread: Mutex::new(Some(thread)),
        })
    }

    fn on_message(
        m: &rdkafka::message::BorrowedMessage<'_>,
        owned: &mut BTreeMap<i32, ReaderPartition>,
        handler: &dyn FleetHandler,
    ) {
        let Some(st) = owned.get_mut(&m.partition()) else {
            return;
        };
        if m.offset() < st.next {
            return;
        }
        st.next = m.offset() + 1;
        let Some(stream) = m.key().map(|k| String::from_utf8_lossy(k).into_owned()) else {
            return;
        };
        if header_str(m, H_VERSION) != Some(SCHEMA_VERSION) {
            tracing::warn!(%stream, offset = m.offset(), "fleet: segment record of an unknown schema version skipped");
            return;
        }
        let tenant = header_str(m, H_TENANT).unwrap_or_default().to_owned();
        match header_str(m, H_KIND) {
            Some("end") => handler.segment(m.partition(), SegmentEvent::End { stream, tenant }),
            Some("segment") => {
                let seq = header_str(m, H_SEQ).and_then(|s| s.parse().ok());
                let chunk = header_str(m, H_CHUNK).and_then(chunk::parse_header);
                let (Some(seq), Some(chunk)) = (seq, chunk) else {
                    tracing::warn!(%stream, offset = m.offset(), "fleet: malformed segment record skipped");
                    return;
                };
                let accepted_ms = header_str(m, H_ACCEPTED)
                    .and_then(|s| s.parse().ok())
                    .unwrap_or(0);
                let payload = m.payload().unwrap_or_default();
                if let Some(bytes) = st.chunks.offer(&stream, seq, chunk, m.offset(), payload) {
                    handler.segment(
                        m.partition(),
                        SegmentEvent::Segment {
                            stream,
                            tenant,
                            seq,
                            bytes,
                            accepted_ms,
                        },
                    );
                }
            }
            other => {
                tracing::warn!(%stream, kind = ?other, "fleet: unknown segment record kind skipped")
            }
        }
    }

    /// Starts reading partition `p` at `offset`.
    pub fn add(&self, p: i32, offset: i64) {
        let _ = self.tx.send(ReaderCommand::Add(p, offset));
    }

    /// Stops reading partition `p`; returns the position up to which every segment was
    /// handed over (`None` if it was not read).
    pub fn remove(&self, p: i32) -> Option<i64> {
        let (tx, rx) = mpsc::channel();
        let _ = self.tx.send(ReaderCommand::Remove(p, tx));
        rx.recv_timeout(Duration::from_secs(60)).ok().flatten()
    }

    /// Stops the thread.
    pub fn stop(&self) {
        let _ = self.tx.send(ReaderCommand::Stop);
        if let Some(t) = self.thread.lock().unwrap_or_else(|e| e.into_inner()).take() {
            let _ = t.join();
        }
    }
}

/// One record of the state topic, as last read.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StateEntry {
    /// Its partition.
    pub partition: i32,
    /// Its value.
    pub value: Vec<u8>,
}

#[derive(Default)]
struct ViewInner {
    latest: HashMap<String, StateEntry>,
    markers: HashSet<String>,
}

/// The whole state topic, read by every worker from the beginning and kept up to date
/// (latest record per key): the fleet view of `GET /v1/streams`, and where a new owner
/// finds a stream's state. Catch-up is detected with a marker record the worker
/// produces and waits to read back (a broker's high watermark is not trusted).
pub struct StateView {
    inner: Arc<(Mutex<ViewInner>, Condvar)>,
    stop: Arc<AtomicBool>,
}

impl std::fmt::Debug for StateView {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("StateView").finish_non_exhaustive()
    }
}

/// Keys of the state topic that are not stream ids start with this.
pub const INTERNAL_KEY: &str = "__";

impl StateView {
    /// Starts reading every partition of the state topic (blocking: fetches metadata).
    pub fn start(cfg: &FleetConfig) -> Result<StateView, FleetError> {
        let consumer: BaseConsumer = client(cfg)
            .set(
                "group.id",
                format!("{}-state-{}", cfg.group_id, cfg.worker_id),
            )
            .set("enable.auto.commit", "false")
            .set("enable.partition.eof", "false")
            .set("fetch.wait.max.ms", "20")
            .create()?;
        let n = partitions_of(&consumer, &cfg.state_topic, Duration::from_secs(30))?;
        let mut tpl = TopicPartitionList::new();
        for p in 0..n as i32 {
            tpl.add_partition_offset(&cfg.state_topic, p, Offset::Beginning)?;
        }
        consumer.assign(&tpl)?;
        let inner: Arc<(Mutex<ViewInner>, Condvar)> = Arc::default();
        let stop = Arc::new(AtomicBool::new(false));
        let (shared, flag) = (inner.clone(), stop.clone());
        std::thread::Builder::new()
            .name("fleet-state".into())
            .spawn(move || {
                while !flag.load(Ordering::Acquire) {
                    let Some(r) = consumer.poll(Duration::from_millis(100)) else {
                        continue;
                    };
                    let m = match r {
                        Ok(m) => m,
                        Err(e) => {
                            tracing::warn!(error = %e, "fleet: state reader");
                            continue;
                        }
                    };
                    let Some(key) = m.key().map(|k| String::from_utf8_lossy(k).into_owned()) else {
                        continue;
                    };
                    let (lock, cv) = &*shared;
                    let mut v = lock.lock().unwrap_or_else(|e| e.into_inner());
                    if key.starts_with("__marker/") {
                        v.markers.insert(key);
                        cv.notify_all();
                        continue;
                    }
                    tracing::trace!(%key, partition = m.partition(), offset = m.offset(), "fleet: state record read");
                    match m.payload() {
                        Some(p) => {
                            v.latest.insert(
                                key,
                                StateEntry {
                                    partition: m.partition(),
                                    value: p.to_vec(),
                                },
                            );
                        }
                        None => {
                            v.latest.remove(&key);
                        }
                    }
                }
            })
            .map_err(|e| FleetError::Other(e.to_string()))?;
        Ok(StateView { inner, stop })
    }

    /// The latest record of `key`.
    pub fn get(&self, key: &str) -> Option<StateEntry> {
        let v = self.inner.0.lock().unwrap_or_else(|e| e.into_inner());
        v.latest.get(key).cloned()
    }

    /// The latest record of every key that starts with `prefix`.
    pub fn with_prefix(&self, prefix: &str) -> Vec<(String, StateEntry)> {
        let v = self.inner.0.lock().unwrap_or_else(|e| e.into_inner());
        v.latest
            .iter()
            .filter(|(k, _)| k.starts_with(prefix))
            .map(|(k, e)| (k.clone(), e.clone()))
            .collect()
    }

    /// Every stream's latest record (internal keys left out), by key.
    pub fn streams(&self) -> Vec<(String, StateEntry)> {
        let v = self.inner.0.lock().unwrap_or_else(|e| e.into_inner());
        let mut out: Vec<_> = v
            .latest
            .iter()
            .filter(|(k, _)| !k.starts_with(INTERNAL_KEY))
            .map(|(k, e)| (k.clone(), e.clone()))
            .collect();
        out.sort_by(|a, b| a.0.cmp(&b.0));
        out
    }

    /// Waits until the marker `key` was read (so everything produced to its partition
    /// before it has been read too); false after `timeout`.
    pub fn wait_marker(&self, key: &str, timeout: Duration) -> bool {
        let (lock, cv) = &*self.inner;
        let deadline = Instant::now() + timeout;
        let mut v = lock.lock().unwrap_or_else(|e| e.into_inner());
        while !v.markers.contains(key) {
            let now = Instant::now();
            if now >= deadline {
                return false;
            }
            v = cv
                .wait_timeout(v, deadline - now)
                .unwrap_or_else(|e| e.into_inner())
                .0;
        }
        v.markers.remove(key);
        true
    }
}

impl Drop for StateView {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Release);
    }
}

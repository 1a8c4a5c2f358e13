//! Fleet-shared state from compacted topics (see `../shared/design/fleet.md`): bank
//! entries from `firebreak.banks`, policy versions from `firebreak.policy`.
//!
//! **Banks.** A record is keyed `<bank>/<entry id>` and carries a [`BankRecord`]
//! (JSON, schema [`BANK_SCHEMA`] in the schema header); a tombstone deletes the entry.
//! A worker starts from its local bank snapshots, each of which records the topic
//! offsets it was built at ([`firebreak_matching::bank::TopicPosition`]); it reads the
//! topic from the lowest of them (a bank skips records below its own position), applies
//! every record to its banks and to the live [`Matcher`] (insert / remove, no rebuild),
//! and saves its snapshots with the new position now and then and when stopped.
//!
//! **Policy.** A record is keyed by policy name and carries a [`PolicyRecord`] (schema
//! [`POLICY_SCHEMA`]): the retained numbered versions and which one is active. Every
//! worker applies the active version of its policy name through
//! [`Engine::set_policy`] (audit-logged as `policy.fleet`), unless it already runs it.
//! [`publish_policy_record`] writes the next version (the operator API in fleet
//! mode).
//!
//! A record that cannot be decoded, has an unknown schema version or is refused is
//! skipped and counted (`firebreak_shared_errors_total{topic,reason}`), never fatal.
//! Each reader detects catch-up with markers (see [`firebreak_delivery::compacted`]);
//! [`FeedsHandle::ready`] is true once both readers caught up, and a new marker round
//! every [`FeedSettings::marker_interval`] keeps `firebreak_shared_lag_records` fresh.
//!
//! Each reader runs on its own thread (librdkafka polls block; applying a record and
//! saving snapshots are CPU and disk work), never on the async runtime.

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use firebreak_delivery::compacted::{
    self, Event, KafkaError, Reader, SharedConfig, SharedRecord, Writer,
};
use firebreak_hashing::vpdq::VpdqFeature;
use firebreak_hashing::{Hash256, PdqHash};
use firebreak_matching::bank::{Bank, Entry, ImportPolicy, TopicPosition};
use firebreak_matching::lists::{self, Record, Signal};
use firebreak_matching::matcher::Matcher;
use firebreak_matching::store::{BankStore, BankSummary};
use serde::{Deserialize, Serialize};

use super::Engine;
use super::versions::{self, StoredPolicy};
use crate::metrics::{Metrics, SharedError, SharedTopic};

/// The bank records' schema version this build writes and reads.
pub const BANK_SCHEMA: u32 = 1;
/// The policy records' schema version this build writes and reads.
pub const POLICY_SCHEMA: u32 = 1;

/// Settings of the shared topics (the fleet config holds them).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FeedSettings {
    /// `host:port,...`
    pub brokers: String,
    /// The bank topic.
    pub banks_topic: String,
    /// The policy topic.
    pub policy_topic: String,
    /// The policy name (record key) this worker follows.
    pub policy_name: String,
    /// Partitions of the topics when this worker creates them.
    pub partitions: i32,
    /// Replication factor when this worker creates them (-1: the broker's default).
    pub replication: i32,
    /// Further librdkafka properties (`security.protocol`, `sasl.*`, `ssl.*`, ...).
    pub properties: BTreeMap<String, String>,
    /// A new catch-up marker round (and lag figure) this often once caught up.
    pub marker_interval: Duration,
    /// Bank snapshots are saved at most this often while entries change (and at stop).
    pub snapshot_interval: Duration,
    /// At stop, after the banks are saved, also write the matcher snapshot of them
    /// (`banks/matcher.fmatch`), so the next start loads the matcher instead of
    /// rebuilding it (`[detectors] bank_snapshot` not `"off"`).
    pub matcher_snapshot: bool,
}

impl FeedSettings {
    /// Defaults for brokers at `brokers`: topics `firebreak.banks` and
    /// `firebreak.policy`, policy `default`, 6 partitions.
    pub fn new(brokers: impl Into<String>) -> FeedSettings {
        FeedSettings {
            brokers: brokers.into(),
            banks_topic: "firebreak.banks".into(),
            policy_topic: "firebreak.policy".into(),
            policy_name: "default".into(),
            partitions: 6,
            replication: -1,
            properties: BTreeMap::new(),
            marker_interval: Duration::from_secs(5),
            snapshot_interval: Duration::from_secs(60),
            matcher_snapshot: true,
        }
    }

    /// The connection settings.
    pub fn shared(&self) -> SharedConfig {
        SharedConfig {
            bootstrap_servers: self.brokers.clone(),
            properties: self.properties.clone(),
        }
    }
}

/// One vPDQ frame in a [`BankRecord`].
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct WireFrame {
    /// Frame number.
    pub frame: u64,
    /// Timestamp, seconds.
    pub ts: f64,
    /// PDQ hash, hex.
    pub hash: String,
    /// PDQ quality.
    pub quality: u8,
}

/// A bank entry's signal on the wire.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "kind", rename_all = "snake_case")]
pub enum WireSignal {
    /// PDQ.
    Pdq {
        /// Hex.
        hash: String,
        /// Quality, if known.
        #[serde(default)]
        quality: Option<u8>,
    },
    /// A video's vPDQ frames.
    Vpdq {
        /// Its frames.
        frames: Vec<WireFrame>,
    },
    /// MD5 of a file, hex.
    Md5 {
        /// Hex.
        hex: String,
    },
    /// SHA-256 of a file, hex.
    Sha256 {
        /// Hex.
        hex: String,
    },
}

impl WireSignal {
    /// The wire form of `signal`.
    pub fn from_signal(signal: &Signal) -> WireSignal {
        match signal {
            Signal::Pdq { hash, quality } => WireSignal::Pdq {
                hash: hash.to_hex(),
                quality: *quality,
            },
            Signal::Vpdq(frames) => WireSignal::Vpdq {
                frames: frames
                    .iter()
                    .map(|f| WireFrame {
                        frame: f.frame_number,
                        ts: f.timestamp,
                        hash: f.pdq.hash.to_hex(),
                        quality: f.pdq.quality,
                    })
                    .collect(),
            },
            Signal::Md5(d) => WireSignal::Md5 { hex: lists::hex(d) },
            Signal::Sha256(d) => WireSignal::Sha256 { hex: lists::hex(d) },
        }
    }

    /// The signal; an error for a malformed hash.
    pub fn to_signal(&self) -> Result<Signal, String> {
        let hash = |h: &str| h.parse::<Hash256>().map_err(|e| format!("hash {h:?}: {e}"));
        Ok(match self {
            WireSignal::Pdq { hash: h, quality } => Signal::Pdq {
                hash: hash(h)?,
                quality: *quality,
            },
            WireSignal::Vpdq { frames } => Signal::Vpdq(
                frames
                    .iter()
                    .map(|f| {
                        Ok(VpdqFeature {
                            pdq: PdqHash {
                                hash: hash(&f.hash)?,
                                quality: f.quality,
                            },
                            frame_number: f.frame,
                            timestamp: f.ts,
                        })
                    })
                    .collect::<Result<_, String>>()?,
            ),
            WireSignal::Md5 { hex } => Signal::Md5(lists::parse_digest(hex)?),
            WireSignal::Sha256 { hex } => Signal::Sha256(lists::parse_digest(hex)?),
        })
    }
}

/// A bank entry on `firebreak.banks` (schema [`BANK_SCHEMA`]), keyed `<bank>/<id>`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct BankRecord {
    /// The bank.
    pub bank: String,
    /// Whether the bank is negative (suppressing).
    #[serde(default)]
    pub negative: bool,
    /// The entry id, unique in its bank.
    pub id: String,
    /// The hash.
    pub signal: WireSignal,
    /// Labels.
    #[serde(default)]
    pub labels: Vec<String>,
    /// The tenant the entry is scoped to (`None`: fleet-wide): applied as the entry's
    /// `tenant:NAME` label (`firebreak_matching::matcher::TENANT_LABEL`), so it
    /// matches only that tenant's streams.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub tenant: Option<String>,
    /// Free-form metadata (source list, who added it, ...).
    #[serde(default, skip_serializing_if = "serde_json::Map::is_empty")]
    pub metadata: serde_json::Map<String, serde_json::Value>,
}

impl BankRecord {
    /// The record of `entry` in bank `bank`.
    pub fn of(bank: &Bank, entry: &Entry) -> BankRecord {
        BankRecord {
            bank: bank.name.clone(),
            negative: bank.negative,
            id: entry.id.clone(),
            signal: WireSignal::from_signal(&entry.signal),
            labels: entry.labels.clone(),
            tenant: None,
            metadata: serde_json::Map::new(),
        }
    }

    /// Its key.
    pub fn key(&self) -> String {
        bank_key(&self.bank, &self.id)
    }
}

/// The key of entry `id` of bank `bank`.
pub fn bank_key(bank: &str, id: &str) -> String {
    format!("{bank}/{id}")
}

/// Publishes the difference between `before` and `after` (the same bank before and
/// after an import) to the bank topic: changed or new entries as records, removed
/// ones as tombstones. Returns (records, tombstones) written.
pub async fn publish_bank_changes(
    writer: &Writer,
    before: &Bank,
    after: &Bank,
) -> Result<(usize, usize), KafkaError> {
    let mut put = 0;
    let mut deleted = 0;
    for e in after.entries() {
        if before.get(&e.id) == Some(e) {
            continue;
        }
        let record = BankRecord::of(after, e);
        let value = serde_json::to_vec(&record).expect("serializable");
        writer.put(&record.key(), BANK_SCHEMA, &value).await?;
        put += 1;
    }
    for e in before.entries() {
        if after.get(&e.id).is_none() {
            writer
                .delete(&bank_key(&before.name, &e.id), BANK_SCHEMA)
                .await?;
            deleted += 1;
        }
    }
    Ok((put, deleted))
}

/// What applying one record did.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Applied {
    /// An entry was added or replaced.
    Upserted,
    /// An entry was deleted.
    Deleted,
    /// Nothing to do (a tombstone of an absent entry, or a record the bank's snapshot
    /// already holds).
    Nothing,
}

/// The banks a worker follows the topic with: pure logic (no I/O, no clock).
#[derive(Debug, Default)]
pub struct BankFeed {
    banks: BTreeMap<String, Bank>,
    /// Per bank, the position its snapshot was built at (records below are in it).
    loaded_at: BTreeMap<String, BTreeMap<i32, i64>>,
    /// Banks changed since the last [`BankFeed::take_dirty`].
    dirty: bool,
    /// Whether any entry changed since the feed started.
    changed: bool,
    /// Whether the matcher holds exactly what the bank files hold once they are saved
    /// (false when a bank file could not be read at the start).
    files_complete: bool,
    /// Entries changed since their bank was last saved, with what the bank file holds
    /// of each (`None`: nothing): what a matcher built from the files lacks.
    unsaved: BTreeMap<(String, String), Option<Entry>>,
}

impl BankFeed {
    /// Follows `topic` from `banks` (loaded snapshots).
    pub fn new(topic: &str, banks: Vec<Bank>) -> BankFeed {
        let mut feed = BankFeed {
            files_complete: true,
            ..BankFeed::default()
        };
        for bank in banks {
            if let Some(p) = bank.position.as_ref().filter(|p| p.topic == topic) {
                feed.loaded_at.insert(bank.name.clone(), p.offsets.clone());
            }
            feed.banks.insert(bank.name.clone(), bank);
        }
        feed
    }

    /// Where to start reading: per partition, the lowest position of the banks that
    /// have one; from the beginning when a bank has none (or there is no bank).
    pub fn start(&self) -> BTreeMap<i32, i64> {
        if self.banks.is_empty() || self.banks.len() != self.loaded_at.len() {
            return BTreeMap::new();
        }
        let mut start: BTreeMap<i32, i64> = BTreeMap::new();
        let partitions: std::collections::BTreeSet<i32> = self
            .loaded_at
            .values()
            .flat_map(|p| p.keys().copied())
            .collect();
        for p in partitions {
            // A bank without this partition in its position has read none of it.
            let lowest = self
                .loaded_at
                .values()
                .map(|o| o.get(&p).copied().unwrap_or(0))
                .min()
                .unwrap_or(0);
            start.insert(p, lowest);
        }
        start
    }

    /// The banks.
    pub fn banks(&self) -> impl Iterator<Item = &Bank> {
        self.banks.values()
    }

    /// Whether banks changed since the last call (and clears it).
    pub fn take_dirty(&mut self) -> bool {
        std::mem::take(&mut self.dirty)
    }

    /// `bank` was saved: its file holds what the feed holds.
    pub fn saved(&mut self, bank: &str) {
        self.unsaved.retain(|(b, _), _| b != bank);
    }

    /// Applies to `matcher`, built from the bank files, every change not saved to them
    /// yet (the file's entry out, the feed's in); returns how many entries.
    pub fn reapply(&self, matcher: &Matcher) -> usize {
        for ((bank_name, id), on_file) in &self.unsaved {
            let Some(bank) = self.banks.get(bank_name) else {
                continue;
            };
            if let Some(old) = on_file {
                matcher.remove(bank_name, bank.negative, old);
            }
            if let Some(new) = bank.get(id) {
                matcher.insert(bank_name, bank.negative, new);
            }
        }
        self.unsaved.len()
    }

    /// Notes that `bank_name/id`, which was `old`, changes (before the change).
    fn changing(&mut self, bank_name: &str, id: &str, old: Option<&Entry>) {
        self.unsaved
            .entry((bank_name.to_owned(), id.to_owned()))
            .or_insert_with(|| old.cloned());
        self.dirty = true;
        self.changed = true;
    }

    /// The banks' summaries for a matcher snapshot, when the bank files hold exactly
    /// what the matcher does and entries changed since the start (otherwise the
    /// snapshot loaded or written at the start still stands, or none may be written).
    pub fn snapshot_summaries(&self) -> Option<Vec<BankSummary>> {
        if !self.changed || !self.files_complete || self.dirty || !self.unsaved.is_empty() {
            return None;
        }
        Some(self.banks.values().map(BankSummary::of).collect())
    }

    /// Applies one record to the banks and to `matcher`.
    pub fn apply(
        &mut self,
        record: &SharedRecord,
        matcher: &Matcher,
    ) -> Result<Applied, (SharedError, String)> {
        let key = std::str::from_utf8(&record.key)
            .map_err(|_| (SharedError::Corrupt, "key is not UTF-8".to_owned()))?;
        let (bank_name, id) = key
            .split_once('/')
            .filter(|(b, i)| BankStore::check_name(b).is_ok() && !i.is_empty())
            .ok_or_else(|| {
                (
                    SharedError::Corrupt,
                    format!("key {key:?} is not <bank>/<id>"),
                )
            })?;
        if let Some(at) = self.loaded_at.get(bank_name)
            && record.offset < at.get(&record.partition).copied().unwrap_or(0)
        {
            return Ok(Applied::Nothing);
        }
        let Some(value) = &record.value else {
            // A tombstone: whatever its schema, the entry goes.
            let Some(bank) = self.banks.get_mut(bank_name) else {
                return Ok(Applied::Nothing);
            };
            let Some(old) = bank.get(id).cloned() else {
                return Ok(Applied::Nothing);
            };
            let negative = bank.negative;
            bank.remove(id);
            matcher.remove(bank_name, negative, &old);
            self.changing(bank_name, id, Some(&old));
            return Ok(Applied::Deleted);
        };
        if record.schema != Some(BANK_SCHEMA) {
            return Err((
                SharedError::UnknownSchema,
                format!("schema {:?}, this build reads {BANK_SCHEMA}", record.schema),
            ));
        }
        let r: BankRecord = serde_json::from_slice(value)
            .map_err(|e| (SharedError::Corrupt, format!("{key}: {e}")))?;
        if r.bank != bank_name || r.id != id {
            return Err((
                SharedError::Corrupt,
                format!("key {key:?} names another entry than its value"),
            ));
        }
        let signal = r
            .signal
            .to_signal()
            .map_err(|e| (SharedError::Corrupt, format!("{key}: {e}")))?;
        let bank = self
            .banks
            .entry(r.bank.clone())
            .or_insert_with(|| Bank::new(&r.bank, r.negative));
        if bank.negative != r.negative {
            return Err((
                SharedError::Rejected,
                format!("{key}: bank {:?} is of the other kind", r.bank),
            ));
        }
        let old = bank.get(id).cloned();
        // Through the import, so the topic gets the same hygiene as a list file; the
        // publisher already applied its quality floor.
        let report = bank.import(
            vec![Record {
                line: 1,
                id: Some(r.id.clone()),
                signal,
                labels: scoped_labels(r.labels, r.tenant.as_deref()),
                delete: false,
            }],
            Vec::new(),
            ImportPolicy { min_quality: 1 },
        );
        if let Some(e) = report.errors.first() {
            return Err((SharedError::Rejected, format!("{key}: {e}")));
        }
        let new = bank.get(id).expect("just imported").clone();
        if old.as_ref() == Some(&new) {
            return Ok(Applied::Nothing);
        }
        if let Some(old) = &old {
            matcher.remove(bank_name, bank.negative, old);
        }
        matcher.insert(bank_name, bank.negative, &new);
        self.changing(bank_name, id, old.as_ref());
        Ok(Applied::Upserted)
    }
}

/// An entry's labels with its scope: a record scoped to a tenant carries exactly that
/// tenant's label; an unscoped one keeps its labels as they are.
pub fn scoped_labels(labels: Vec<String>, tenant: Option<&str>) -> Vec<String> {
    use firebreak_matching::matcher::TENANT_LABEL;
    match tenant {
        None => labels,
        Some(t) => labels
            .into_iter()
            .filter(|l| !l.starts_with(TENANT_LABEL))
            .chain([format!("{TENANT_LABEL}{t}")])
            .collect(),
    }
}

/// The versions of one policy on `firebreak.policy` (schema [`POLICY_SCHEMA`]), keyed
/// by [`PolicyRecord::name`].
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct PolicyRecord {
    /// The policy name.
    pub name: String,
    /// The number of the active version; the others are shadows.
    pub active: u64,
    /// The retained versions, oldest first.
    pub versions: Vec<StoredPolicy>,
}

impl PolicyRecord {
    /// The active version.
    pub fn active_version(&self) -> Option<&StoredPolicy> {
        self.versions.iter().find(|v| v.number == self.active)
    }
}

/// Versions a [`PolicyRecord`] retains (the active one is always kept).
pub const POLICY_VERSIONS_KEPT: usize = 20;

/// The record after adding `config` as the next version of `current` (or the first of
/// policy `name`), made active when `activate` (else a shadow), applied on `dry_run`
/// if given. Pure.
pub fn next_policy_record(
    current: Option<&PolicyRecord>,
    name: &str,
    config: &firebreak_policy::config::PolicyConfig,
    who: &str,
    at_ms: u64,
    activate: bool,
    dry_run: Option<versions::DryRunRecord>,
) -> PolicyRecord {
    let mut record = current.cloned().unwrap_or_else(|| PolicyRecord {
        name: name.to_owned(),
        active: 0,
        versions: Vec::new(),
    });
    let number = record.versions.iter().map(|v| v.number).max().unwrap_or(0) + 1;
    let policy = firebreak_policy::policy::Policy::new(config.clone());
    record.versions.push(StoredPolicy {
        format: versions::FORMAT.into(),
        format_version: versions::VERSION,
        number,
        at_ms,
        who: who.to_owned(),
        source: "policy.fleet".into(),
        policy_version: policy.version().to_owned(),
        file_sha256: String::new(),
        rolled_back_from: None,
        dry_run,
        toml: toml::to_string(config).unwrap_or_default(),
    });
    if activate || record.active == 0 {
        record.active = number;
    }
    while record.versions.len() > POLICY_VERSIONS_KEPT {
        let Some(at) = record
            .versions
            .iter()
            .position(|v| v.number != record.active)
        else {
            break;
        };
        record.versions.remove(at);
    }
    record
}

/// Writes `record` (the next version, [`next_policy_record`] of the latest record the
/// writer read, e.g. [`FeedsHandle::policy_record`]) to the policy topic. Two writers
/// at once: the last one wins.
pub async fn publish_policy_record(
    writer: &Writer,
    record: PolicyRecord,
) -> Result<PolicyRecord, KafkaError> {
    let value = serde_json::to_vec(&record).expect("serializable");
    writer.put(&record.name, POLICY_SCHEMA, &value).await?;
    Ok(record)
}

/// Decodes a policy record (pure).
pub fn decode_policy(record: &SharedRecord) -> Result<Option<PolicyRecord>, (SharedError, String)> {
    let Some(value) = &record.value else {
        return Ok(None);
    };
    if record.schema != Some(POLICY_SCHEMA) {
        return Err((
            SharedError::UnknownSchema,
            format!(
                "schema {:?}, this build reads {POLICY_SCHEMA}",
                record.schema
            ),
        ));
    }
    let r: PolicyRecord =
        serde_json::from_slice(value).map_err(|e| (SharedError::Corrupt, e.to_string()))?;
    if r.name.as_bytes() != record.key.as_slice() {
        return Err((
            SharedError::Corrupt,
            "the key names another policy than the value".into(),
        ));
    }
    Ok(Some(r))
}

/// The running readers (see the module doc).
#[derive(Debug)]
pub struct FeedsHandle {
    stop: Arc<AtomicBool>,
    banks_ready: Arc<AtomicBool>,
    policy_ready: Arc<AtomicBool>,
    policy: Arc<Mutex<Option<PolicyRecord>>>,
    threads: Vec<JoinHandle<()>>,
}

impl FeedsHandle {
    /// Both readers have caught up once (readiness waits for this).
    pub fn ready(&self) -> bool {
        self.banks_ready.load(Ordering::Acquire) && self.policy_ready.load(Ordering::Acquire)
    }

    /// The latest record of this worker's policy read from the topic.
    pub fn policy_record(&self) -> Option<PolicyRecord> {
        self.policy
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .clone()
    }

    /// Stops the readers and waits for them (the bank reader saves its snapshots
    /// first). Blocking.
    pub fn stop(mut self) {
        self.stop.store(true, Ordering::Release);
        for t in self.threads.drain(..) {
            let _ = t.join();
        }
    }
}

impl Drop for FeedsHandle {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Release);
    }
}

/// Starts the bank and policy readers for `engine`, with bank snapshots in `banks_dir`
/// (the engine's matcher must have been built from the same snapshots). Returns at
/// once; the readers create the topics if needed and retry broker errors.
pub fn spawn(
    settings: &FeedSettings,
    engine: &Arc<Engine>,
    banks_dir: PathBuf,
) -> std::io::Result<FeedsHandle> {
    let stop = Arc::new(AtomicBool::new(false));
    let banks_ready = Arc::new(AtomicBool::new(false));
    let policy_ready = Arc::new(AtomicBool::new(false));
    let policy = Arc::new(Mutex::new(None));
    let mut threads = Vec::new();
    {
        let (s, e, stop, ready) = (
            settings.clone(),
            engine.clone(),
            stop.clone(),
            banks_ready.clone(),
        );
        threads.push(
            std::thread::Builder::new()
                .name("firebreak-bankfeed".into())
                .spawn(move || run_banks(&s, &e, &banks_dir, &stop, &ready))?,
        );
    }
    {
        let (s, e, stop, ready, current) = (
            settings.clone(),
            engine.clone(),
            stop.clone(),
            policy_ready.clone(),
            policy.clone(),
        );
        threads.push(
            std::thread::Builder::new()
                .name("firebreak-policyfeed".into())
                .spawn(move || run_policy(&s, &e, &stop, &ready, &current))?,
        );
    }
    Ok(FeedsHandle {
        stop,
        banks_ready,
        policy_ready,
        policy,
        threads,
    })
}

const POLL: Duration = Duration::from_millis(100);
const RETRY: Duration = Duration::from_secs(1);

/// Opens a reader (creating the topic), retrying until it works or `stop`.
fn open_reader(
    settings: &FeedSettings,
    topic: &str,
    start: &BTreeMap<i32, i64>,
    metrics: &Metrics,
    which: SharedTopic,
    stop: &AtomicBool,
) -> Option<Reader> {
    let config = settings.shared();
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .ok()?;
    while !stop.load(Ordering::Acquire) {
        let created = rt.block_on(compacted::ensure_topic(
            &config,
            topic,
            settings.partitions,
            settings.replication,
        ));
        let opened =
            created.and_then(|()| Reader::open(&config, topic, start, Duration::from_secs(10)));
        match opened.and_then(|mut r| r.start_catch_up().map(|()| r)) {
            Ok(r) => return Some(r),
            Err(e) => {
                metrics.shared_error(which, SharedError::Broker);
                tracing::warn!(error = %e, topic, "shared topic reader: retrying");
                std::thread::sleep(RETRY);
            }
        }
    }
    None
}

fn delay_of(record: &SharedRecord) -> Option<f64> {
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .ok()?
        .as_millis() as i64;
    record.timestamp_ms.map(|t| (now - t) as f64 / 1000.0)
}

/// Polls `reader` once: records to `on_record`; handles catch-up, marker rounds and
/// lag; a broker error is counted and logged (the client retries).
fn step(
    reader: &mut Reader,
    which: SharedTopic,
    metrics: &Metrics,
    ready: &AtomicBool,
    last_round: &mut Instant,
    interval: Duration,
    on_record: &mut dyn FnMut(&SharedRecord),
) {
    match reader.poll(POLL) {
        Some(Ok(Event::Record(r))) => on_record(&r),
        Some(Ok(Event::CaughtUp)) => {
            if !ready.swap(true, Ordering::AcqRel) {
                tracing::info!(topic = which.as_str(), position = ?reader.position(), "shared topic caught up");
            }
            metrics.shared_caught_up(which, true);
        }
        Some(Err(e)) => {
            metrics.shared_error(which, SharedError::Broker);
            tracing::warn!(error = %e, topic = which.as_str(), "shared topic reader");
        }
        None => {}
    }
    metrics.shared_lag(which, reader.lag());
    if reader.caught_up() && last_round.elapsed() >= interval {
        *last_round = Instant::now();
        if let Err(e) = reader.start_catch_up() {
            metrics.shared_error(which, SharedError::Broker);
            tracing::warn!(error = %e, topic = which.as_str(), "shared topic marker round");
        }
    }
}

fn run_banks(
    settings: &FeedSettings,
    engine: &Arc<Engine>,
    dir: &std::path::Path,
    stop: &AtomicBool,
    ready: &AtomicBool,
) {
    let metrics = engine.metrics().clone();
    let which = SharedTopic::Banks;
    metrics.shared_caught_up(which, false);
    let store = BankStore::new(dir);
    // The feed lives in the engine, whose lock a reload holds (Engine::hold_bank_feed).
    let start = engine.with_bank_feed(|slot| {
        let (banks, complete) = match store.load_all() {
            Ok(set) => (
                set.banks.into_iter().map(|b| b.bank).collect(),
                set.skipped.is_empty(),
            ),
            Err(e) => {
                tracing::error!(error = %e, "bank feed: cannot read the banks directory");
                (Vec::new(), false)
            }
        };
        let feed = slot.insert(BankFeed::new(&settings.banks_topic, banks));
        feed.files_complete = complete;
        feed.start()
    });
    let Some(mut reader) = open_reader(
        settings,
        &settings.banks_topic,
        &start,
        &metrics,
        which,
        stop,
    ) else {
        engine.with_bank_feed(|slot| *slot = None);
        return;
    };
    let mut last_round = Instant::now();
    let mut last_save = Instant::now();
    let mut changed = 0usize;
    while !stop.load(Ordering::Acquire) {
        step(
            &mut reader,
            which,
            &metrics,
            ready,
            &mut last_round,
            settings.marker_interval,
            // The matcher is read under the feed's lock: a reload swaps it holding it.
            &mut |r| match engine.with_bank_feed(|slot| {
                let feed = slot
                    .as_mut()
                    .expect("the feed is in its slot while it runs");
                feed.apply(r, &engine.detectors().matcher)
            }) {
                Ok(Applied::Nothing) => {}
                Ok(_) => {
                    changed += 1;
                    metrics.shared_applied(which, delay_of(r));
                }
                Err((reason, detail)) => {
                    metrics.shared_error(which, reason);
                    tracing::warn!(
                        partition = r.partition,
                        offset = r.offset,
                        reason = reason.as_str(),
                        %detail,
                        "bank record skipped"
                    );
                }
            },
        );
        if changed >= 1024 {
            engine.detectors().matcher.compact_if_needed();
            changed = 0;
        }
        if reader.caught_up() && last_save.elapsed() >= settings.snapshot_interval {
            last_save = Instant::now();
            engine.detectors().matcher.compact_if_needed();
            save(&store, engine, &settings.banks_topic, reader.position());
        }
    }
    save(&store, engine, &settings.banks_topic, reader.position());
    if settings.matcher_snapshot {
        save_matcher(&store, engine);
    }
    engine.with_bank_feed(|slot| *slot = None);
}

/// Writes the matcher snapshot of the saved banks (see
/// [`BankFeed::snapshot_summaries`]), so the next start loads it instead of rebuilding.
fn save_matcher(store: &BankStore, engine: &Engine) {
    engine.with_bank_feed(|slot| {
        let Some(banks) = slot.as_ref().and_then(BankFeed::snapshot_summaries) else {
            return;
        };
        let started = Instant::now();
        match store.save_matcher(&engine.detectors().matcher, &banks) {
            Ok(()) => tracing::info!(
                seconds = started.elapsed().as_secs_f64(),
                "bank feed: matcher snapshot written for the next start"
            ),
            Err(e) => tracing::warn!(error = %e, "bank feed: matcher snapshot not written"),
        }
    });
}

/// Saves every bank with the reader's position, if any changed since the last save
/// (holding the feed: a reload reads the files before or after, never between).
fn save(store: &BankStore, engine: &Engine, topic: &str, position: &BTreeMap<i32, i64>) {
    engine.with_bank_feed(|slot| {
        let Some(feed) = slot.as_mut() else {
            return;
        };
        if !feed.take_dirty() {
            return;
        }
        let mut saved = Vec::new();
        for bank in feed.banks.values_mut() {
            bank.position = Some(TopicPosition {
                topic: topic.to_owned(),
                offsets: position.clone(),
            });
            match store.save(bank) {
                Ok(()) => saved.push(bank.name.clone()),
                Err(e) => {
                    tracing::error!(error = %e, bank = bank.name, "ALARM: bank snapshot not saved");
                    feed.dirty = true;
                }
            }
        }
        for name in saved {
            feed.saved(&name);
        }
    });
}

fn run_policy(
    settings: &FeedSettings,
    engine: &Arc<Engine>,
    stop: &AtomicBool,
    ready: &AtomicBool,
    current: &Mutex<Option<PolicyRecord>>,
) {
    let metrics = engine.metrics().clone();
    let which = SharedTopic::Policy;
    metrics.shared_caught_up(which, false);
    // The policy topic is small: always read from the beginning.
    let Some(mut reader) = open_reader(
        settings,
        &settings.policy_topic,
        &BTreeMap::new(),
        &metrics,
        which,
        stop,
    ) else {
        return;
    };
    let mut last_round = Instant::now();
    while !stop.load(Ordering::Acquire) {
        step(
            &mut reader,
            which,
            &metrics,
            ready,
            &mut last_round,
            settings.marker_interval,
            &mut |r| {
                if r.key != settings.policy_name.as_bytes() {
                    return;
                }
                match decode_policy(r).and_then(|p| apply_policy(engine, p.as_ref()).map(|()| p)) {
                    Ok(p) => {
                        metrics.shared_applied(which, delay_of(r));
                        *current.lock().unwrap_or_else(|e| e.into_inner()) = p;
                    }
                    Err((reason, detail)) => {
                        metrics.shared_error(which, reason);
                        tracing::warn!(
                            partition = r.partition,
                            offset = r.offset,
                            reason = reason.as_str(),
                            %detail,
                            "policy record skipped"
                        );
                    }
                }
            },
        );
    }
}

/// Makes the engine run `record`'s active version unless it already does. Blocking.
fn apply_policy(
    engine: &Engine,
    record: Option<&PolicyRecord>,
) -> Result<(), (SharedError, String)> {
    let Some(record) = record else {
        // A tombstone: the policy stays as it is.
        return Ok(());
    };
    let active = record.active_version().ok_or_else(|| {
        (
            SharedError::Rejected,
            format!("active version {} is not in the record", record.active),
        )
    })?;
    let config = crate::config::policy_from_toml(&active.toml, "fleet").map_err(|issues| {
        (
            SharedError::Rejected,
            issues
                .iter()
                .map(ToString::to_string)
                .collect::<Vec<_>>()
                .join("; "),
        )
    })?;
    if versions::policy_sha256(&config) == versions::policy_sha256(engine.policy().config()) {
        return Ok(());
    }
    engine
        .set_policy(
            config,
            "fleet",
            &format!("{}@{}", record.name, active.number),
            "policy.fleet",
            &format!("{} version {}", record.name, active.number),
        )
        .map(|_| ())
        .map_err(|e| (SharedError::Rejected, format!("{e:?}")))
}

#[cfg(test)]
mod tests {
    use super::*;
    use firebreak_matching::matcher::MatchConfig;

    const H: &str = "f8f8f0cee0f4a84f06370a22038f63f0b36e2ed596621e1d33e6b39c4e9c9b22";

    fn record(
        partition: i32,
        offset: i64,
        key: &str,
        schema: Option<u32>,
        value: Option<Vec<u8>>,
    ) -> SharedRecord {
        SharedRecord {
            partition,
            offset,
            key: key.as_bytes().to_vec(),
            schema,
            value,
            timestamp_ms: None,
        }
    }

    fn entry_value(bank: &str, id: &str, hash: &str) -> Vec<u8> {
        serde_json::to_vec(&BankRecord {
            bank: bank.into(),
            negative: false,
            id: id.into(),
            signal: WireSignal::Pdq {
                hash: hash.into(),
                quality: Some(100),
            },
            labels: vec!["crisis".into()],
            tenant: Some("acme".into()),
            metadata: serde_json::Map::new(),
        })
        .unwrap()
    }

    #[test]
    fn records_add_replace_and_tombstones_delete_live() {
        let matcher = Matcher::new([], MatchConfig::default(), 1);
        let mut feed = BankFeed::new("t", vec![]);
        let h: Hash256 = H.parse().unwrap();
        let r = record(
            0,
            0,
            "crisis/e1",
            Some(1),
            Some(entry_value("crisis", "e1", H)),
        );
        assert_eq!(feed.apply(&r, &matcher), Ok(Applied::Upserted));
        assert_eq!(&*matcher.match_pdq(&h).matches[0].entry.id, "e1");
        // The same record again changes nothing.
        assert_eq!(feed.apply(&r, &matcher), Ok(Applied::Nothing));
        // Replaced by a far hash: the old one no longer matches.
        let far: Hash256 = "0f0f0f0f0f0f0f0f0f0f0f0f0f0f0f0f0f0f0f0f0f0f0f0f0f0f0f0f0f0f0f0f"
            .parse()
            .unwrap();
        let r = record(
            0,
            1,
            "crisis/e1",
            Some(1),
            Some(entry_value("crisis", "e1", &far.to_hex())),
        );
        assert_eq!(feed.apply(&r, &matcher), Ok(Applied::Upserted));
        assert!(matcher.match_pdq(&h).matches.is_empty());
        assert_eq!(matcher.match_pdq(&far).matches.len(), 1);
        let t = record(0, 2, "crisis/e1", Some(1), None);
        assert_eq!(feed.apply(&t, &matcher), Ok(Applied::Deleted));
        assert!(matcher.match_pdq(&far).matches.is_empty());
        assert_eq!(feed.apply(&t, &matcher), Ok(Applied::Nothing));
        assert!(feed.take_dirty());
        assert!(!feed.take_dirty());
    }

    /// A matcher built from the bank files, as a reload builds it, gets the changes the
    /// feed applied since the last save: an entry replaced, one deleted, one added.
    #[test]
    fn a_matcher_rebuilt_from_the_files_gets_the_changes_not_saved() {
        let hex = |i: u8| format!("{i:x}").repeat(64);
        let (a, b, c, d) = (hex(1), hex(0xe), hex(3), hex(0xc));
        let h = |s: &str| -> Hash256 { s.parse().unwrap() };
        let ids = |m: &Matcher, s: &str| -> Vec<String> {
            m.match_pdq(&h(s))
                .matches
                .iter()
                .map(|x| x.entry.id.to_string())
                .collect()
        };
        let live = Matcher::new([], MatchConfig::default(), 1);
        let mut feed = BankFeed::new("t", vec![]);
        let put = |offset, id: &str, hash: &str| {
            record(
                0,
                offset,
                &format!("crisis/{id}"),
                Some(1),
                Some(entry_value("crisis", id, hash)),
            )
        };
        feed.apply(&put(0, "e1", &a), &live).unwrap();
        feed.apply(&put(1, "e2", &b), &live).unwrap();
        // Saved: the file holds e1 = a, e2 = b.
        assert!(feed.take_dirty());
        feed.saved("crisis");
        assert_eq!(feed.reapply(&live), 0);
        let file = feed.banks().next().unwrap().clone();
        // Then, not saved: e1 = c, e2 deleted, e3 = d.
        feed.apply(&put(2, "e1", &c), &live).unwrap();
        feed.apply(&record(0, 3, "crisis/e2", Some(1), None), &live)
            .unwrap();
        feed.apply(&put(4, "e3", &d), &live).unwrap();
        let rebuilt = Matcher::new([&file], MatchConfig::default(), 1);
        assert_eq!(ids(&rebuilt, &a), ["e1"]);
        assert_eq!(ids(&rebuilt, &b), ["e2"]);
        assert_eq!(feed.reapply(&rebuilt), 3);
        for m in [&live, &rebuilt] {
            assert!(ids(m, &a).is_empty());
            assert!(ids(m, &b).is_empty());
            assert_eq!(ids(m, &c), ["e1"]);
            assert_eq!(ids(m, &d), ["e3"]);
        }
        // Once saved, a rebuilt matcher has it all from the file.
        feed.saved("crisis");
        assert_eq!(feed.reapply(&rebuilt), 0);
    }

    /// A record scoped to a tenant matches that tenant's streams only; the same key
    /// republished without a tenant (an admin's promotion) matches everyone's.
    #[test]
    fn a_scoped_entry_matches_its_tenant_until_promoted() {
        let matcher = Matcher::new([], MatchConfig::default(), 1);
        let mut feed = BankFeed::new("t", vec![]);
        let h: Hash256 = H.parse().unwrap();
        let r = record(
            0,
            0,
            "crisis/e1",
            Some(1),
            Some(entry_value("crisis", "e1", H)),
        );
        assert_eq!(feed.apply(&r, &matcher), Ok(Applied::Upserted));
        assert_eq!(matcher.match_pdq_for(&h, Some("acme")).matches.len(), 1);
        assert!(matcher.match_pdq_for(&h, Some("other")).matches.is_empty());
        // A label claiming another scope does not widen a scoped record.
        let mut v: BankRecord = serde_json::from_slice(&entry_value("crisis", "e1", H)).unwrap();
        v.labels.push("tenant:other".into());
        let r = record(
            0,
            1,
            "crisis/e1",
            Some(1),
            Some(serde_json::to_vec(&v).unwrap()),
        );
        feed.apply(&r, &matcher).unwrap();
        assert!(matcher.match_pdq_for(&h, Some("other")).matches.is_empty());
        // Promoted.
        v.tenant = None;
        v.labels = vec!["crisis".into()];
        let r = record(
            0,
            2,
            "crisis/e1",
            Some(1),
            Some(serde_json::to_vec(&v).unwrap()),
        );
        assert_eq!(feed.apply(&r, &matcher), Ok(Applied::Upserted));
        assert_eq!(matcher.match_pdq_for(&h, Some("other")).matches.len(), 1);
        assert_eq!(matcher.match_pdq_for(&h, Some("acme")).matches.len(), 1);
    }

    #[test]
    fn bad_records_are_skipped_with_a_reason() {
        let matcher = Matcher::new([], MatchConfig::default(), 1);
        let mut feed = BankFeed::new("t", vec![]);
        let reason = |feed: &mut BankFeed, r: SharedRecord| feed.apply(&r, &matcher).unwrap_err().0;
        let good = entry_value("crisis", "e1", H);
        assert_eq!(
            reason(
                &mut feed,
                record(0, 0, "crisis/e1", Some(2), Some(good.clone()))
            ),
            SharedError::UnknownSchema
        );
        assert_eq!(
            reason(
                &mut feed,
                record(0, 0, "crisis/e1", None, Some(good.clone()))
            ),
            SharedError::UnknownSchema
        );
        assert_eq!(
            reason(
                &mut feed,
                record(0, 0, "crisis/e1", Some(1), Some(b"{not json".to_vec()))
            ),
            SharedError::Corrupt
        );
        assert_eq!(
            reason(
                &mut feed,
                record(0, 0, "no-slash", Some(1), Some(good.clone()))
            ),
            SharedError::Corrupt
        );
        assert_eq!(
            reason(
                &mut feed,
                record(0, 0, "crisis/e2", Some(1), Some(good.clone()))
            ),
            SharedError::Corrupt
        );
        assert_eq!(
            reason(
                &mut feed,
                record(
                    0,
                    0,
                    "crisis/e1",
                    Some(1),
                    Some(entry_value("crisis", "e1", &"0".repeat(64)))
                )
            ),
            SharedError::Rejected
        );
        assert_eq!(
            reason(
                &mut feed,
                record(
                    0,
                    0,
                    "crisis/e1",
                    Some(1),
                    Some(entry_value("crisis", "e1", "xyz"))
                )
            ),
            SharedError::Corrupt
        );
        assert_eq!(matcher.sizes().pdq, 0);
        // A good record after them still applies.
        assert_eq!(
            feed.apply(&record(0, 1, "crisis/e1", Some(1), Some(good)), &matcher),
            Ok(Applied::Upserted)
        );
    }

    #[test]
    fn a_bank_skips_records_its_snapshot_holds() {
        let mut bank = Bank::new("crisis", false);
        bank.position = Some(TopicPosition {
            topic: "t".into(),
            offsets: [(0, 5), (1, 2)].into_iter().collect(),
        });
        let mut other = Bank::new("extra", false);
        other.position = Some(TopicPosition {
            topic: "t".into(),
            offsets: [(0, 3)].into_iter().collect(),
        });
        let mut feed = BankFeed::new("t", vec![bank.clone(), other]);
        // Lowest per partition; partition 1 unknown to `extra` means from 0.
        assert_eq!(feed.start(), [(0, 3), (1, 0)].into_iter().collect());
        let matcher = Matcher::new([&bank], MatchConfig::default(), 1);
        let v = entry_value("crisis", "e1", H);
        assert_eq!(
            feed.apply(
                &record(0, 4, "crisis/e1", Some(1), Some(v.clone())),
                &matcher
            ),
            Ok(Applied::Nothing)
        );
        assert_eq!(
            feed.apply(&record(0, 5, "crisis/e1", Some(1), Some(v)), &matcher),
            Ok(Applied::Upserted)
        );
        // A snapshot of another topic, or a bank without a position: from the start.
        let mut elsewhere = Bank::new("crisis", false);
        elsewhere.position = Some(TopicPosition {
            topic: "other".into(),
            offsets: [(0, 5)].into_iter().collect(),
        });
        assert!(BankFeed::new("t", vec![elsewhere]).start().is_empty());
        assert!(BankFeed::new("t", vec![]).start().is_empty());
    }

    #[test]
    fn policy_records_keep_the_active_version_and_shadows() {
        let config = firebreak_policy::config::PolicyConfig::builtin();
        let r1 = next_policy_record(None, "default", &config, "op", 1, false, None);
        assert_eq!((r1.active, r1.versions.len()), (1, 1));
        let r2 = next_policy_record(Some(&r1), "default", &config, "op", 2, false, None);
        assert_eq!((r2.active, r2.versions.len()), (1, 2), "a shadow");
        let r3 = next_policy_record(Some(&r2), "default", &config, "op", 3, true, None);
        assert_eq!(r3.active, 3);
        let mut r = r3;
        for i in 0..30 {
            r = next_policy_record(Some(&r), "default", &config, "op", i, false, None);
        }
        assert_eq!(r.versions.len(), POLICY_VERSIONS_KEPT);
        assert_eq!(r.active_version().unwrap().number, 3);
        let value = serde_json::to_vec(&r).unwrap();
        let decoded =
            decode_policy(&record(0, 0, "default", Some(1), Some(value.clone()))).unwrap();
        assert_eq!(decoded, Some(r));
        assert_eq!(
            decode_policy(&record(0, 0, "default", Some(9), Some(value.clone())))
                .unwrap_err()
                .0,
            SharedError::UnknownSchema
        );
        assert_eq!(
            decode_policy(&record(0, 0, "other", Some(1), Some(value)))
                .unwrap_err()
                .0,
            SharedError::Corrupt
        );
        assert_eq!(
            decode_policy(&record(0, 0, "default", Some(1), Some(b"[".to_vec())))
                .unwrap_err()
                .0,
            SharedError::Corrupt
        );
    }
}

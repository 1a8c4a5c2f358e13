//! Fleet mode (`[fleet]`): workers share streams through Kafka
//! (`firebreak_delivery::fleet` holds the Kafka side; this is the worker's side).
//!
//! - **Any worker's API** produces: a pushed segment to the segments topic (`202`
//!   once the broker acknowledged it, acks=all), a registration or a stop (tombstone)
//!   to the streams topic, a pushed stream's end to the segments topic (after its
//!   segments, so the owner reads it after them). Authentication, tenant, size and
//!   rate checks happen first, at the receiving worker. `GET /v1/streams` shows the
//!   whole fleet from the state topic. The tenant's stream quota
//!   (`server.max_streams_per_tenant`) is fleet-wide: a new stream is counted against
//!   the tenant's running streams on the state topic plus the registrations this worker
//!   produced that the topic does not show yet ([`Quota`]). Every worker publishes a
//!   heartbeat (`__worker/{id}`) to the state topic each checkpoint and grants one over
//!   the workers alive of the tenants' request rates.
//! - **The owner** of a partition (the consumer group on the streams topic decides)
//!   runs its streams: registrations start pulled streams, segments go through the
//!   stream's sequencer to its decoder (duplicates and far-off numbers are counted
//!   there), and every `checkpoint_secs` it publishes each stream's state (view,
//!   consumed sequence numbers, the sequencer's next number, the policy state) and
//!   then the segment position of the partition to the state topic.
//! - **On revoke** it stops those streams without ending them (no `ended` decision:
//!   the stream continues elsewhere), publishes their state and the position;
//!   readiness is false meanwhile. **On assign** it reads the state topic up to a
//!   marker it produced, restores each stream's policy state (its open incident goes
//!   on, no duplicate) and sequencer, and reads segments from the position; pulled
//!   sources reconnect at the live edge; an fMP4 stream's init section (sent with its
//!   registration) is fed first.

use std::collections::{BTreeSet, HashMap, HashSet};
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, OnceLock};
use std::time::Duration;

use axum::Json;
use axum::body::Bytes;
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use base64::Engine as _;
use firebreak_delivery::fleet::{
    FleetConfig, FleetHandler, FleetProducer, Membership, SegmentEvent, SegmentReader, StateView,
    block_on, ensure_topics,
};
use firebreak_policy::policy::StreamState;
use serde::{Deserialize, Serialize};

use crate::config::{StreamSettings, StreamSource, StreamSpec};
use crate::engine::Engine;
use crate::http::auth::Caller;
use crate::http::error;
use crate::http::ingest::{
    API_HLS_SCHEMES, API_URL_SCHEMES, FleetAccepted, IngestState, RegistrationInvalid, SeqRange,
    StreamView,
};

/// The version of the JSON records below.
const VERSION: u32 = 1;

/// A registration on the streams topic.
#[derive(Debug, Clone, Serialize, Deserialize)]
struct Registration {
    v: u32,
    tenant: String,
    /// A pushed stream (registered by its segment 0), else a pulled one (`spec`).
    #[serde(default)]
    push: bool,
    #[serde(default)]
    spec: Option<StreamSpec>,
    /// From a worker's config file (any source), not the API.
    #[serde(default)]
    trusted: bool,
    /// fMP4 init section, base64.
    #[serde(default)]
    init: Option<String>,
}

/// A stream's state on the state topic.
#[derive(Debug, Clone, Serialize, Deserialize)]
struct StateRecord {
    v: u32,
    worker: String,
    partition: i32,
    updated_ms: u64,
    view: StreamView,
    consumed: Vec<SeqRange>,
    next_seq: Option<u64>,
    policy_version: Option<String>,
    policy_state: Option<StreamState>,
}

/// The fields of a state record the quota needs (parsed without the rest).
#[derive(Debug, Deserialize)]
struct Brief {
    v: u32,
    view: BriefView,
}

#[derive(Debug, Deserialize)]
struct BriefView {
    tenant: String,
    state: String,
}

/// Keys of the workers' heartbeats on the state topic (then the worker id).
const WORKER_KEY: &str = "__worker/";

/// A worker's heartbeat on the state topic, every checkpoint.
#[derive(Debug, Serialize, Deserialize)]
struct Heartbeat {
    v: u32,
    at_ms: u64,
}

/// How many workers are alive: those whose latest heartbeat in `beats` is at most
/// `window_ms` old at `now_ms`; at least one (the caller). Pure.
fn alive(
    beats: &[(String, firebreak_delivery::fleet::StateEntry)],
    now_ms: u64,
    window_ms: u64,
) -> usize {
    beats
        .iter()
        .filter_map(|(_, e)| serde_json::from_slice::<Heartbeat>(&e.value).ok())
        .filter(|h| h.v == VERSION && now_ms.saturating_sub(h.at_ms) <= window_ms)
        .count()
        .max(1)
}

/// A partition's segment position on the state topic.
#[derive(Debug, Clone, Serialize, Deserialize)]
struct Position {
    v: u32,
    offset: i64,
    worker: String,
}

/// Sequence numbers as sorted, disjoint, non-adjacent ranges. Pure.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Ranges(Vec<(u64, u64)>);

impl Ranges {
    /// Adds `n`.
    pub fn insert(&mut self, n: u64) {
        let v = &mut self.0;
        let i = v.partition_point(|&(_, last)| last.saturating_add(1) < n);
        if i < v.len() && v[i].0 <= n.saturating_add(1) {
            v[i].0 = v[i].0.min(n);
            v[i].1 = v[i].1.max(n);
            if i + 1 < v.len() && v[i + 1].0 <= v[i].1.saturating_add(1) {
                v[i].1 = v[i].1.max(v[i + 1].1);
                v.remove(i + 1);
            }
        } else {
            v.insert(i, (n, n));
        }
    }

    /// The ranges, for the API.
    pub fn to_api(&self) -> Vec<SeqRange> {
        self.0
            .iter()
            .map(|&(first, last)| SeqRange { first, last })
            .collect()
    }

    /// From the API form.
    pub fn from_api(r: &[SeqRange]) -> Ranges {
        let mut out = Ranges::default();
        for r in r {
            if r.first <= r.last && r.last - r.first < 1 << 20 {
                for n in r.first..=r.last {
                    out.insert(n);
                }
            }
        }
        out
    }
}

/// How long a registration produced here counts toward its tenant's quota while the
/// state topic does not show its stream running.
const PENDING_MS: u64 = 10_000;

/// The fleet-wide stream quota at one worker. Pure: the state view's records and the
/// time are passed in.
///
/// A tenant's running streams are those the state topic shows unfinished, plus the
/// streams this worker admitted in the last [`PENDING_MS`] that the topic does not
/// show running yet (their owner publishes a record as it starts them). Two workers
/// admitting a tenant's streams within that propagation delay of each other can each
/// admit up to the quota; a worker's own bursts are counted exactly.
#[derive(Debug, Default)]
pub struct Quota {
    /// Stream id → (tenant, admitted at ms).
    pending: HashMap<String, (String, u64)>,
}

impl Quota {
    /// Whether `tenant` may run stream `id`, given every stream record of the state
    /// view as (id, tenant, finished) and the tenant's `limit`; an admitted new
    /// stream is counted from now on.
    pub fn admit(
        &mut self,
        view: &[(String, String, bool)],
        tenant: &str,
        id: &str,
        limit: usize,
        now_ms: u64,
    ) -> bool {
        let shown: HashSet<&str> = view
            .iter()
            .filter(|(_, _, finished)| !finished)
            .map(|(id, _, _)| id.as_str())
            .collect();
        self.pending.retain(|p, (_, at)| {
            !shown.contains(p.as_str()) && now_ms.saturating_sub(*at) < PENDING_MS
        });
        let running = view
            .iter()
            .filter(|(_, t, finished)| !finished && t == tenant)
            .map(|(id, _, _)| id.as_str())
            .chain(
                self.pending
                    .iter()
                    .filter(|(_, (t, _))| t == tenant)
                    .map(|(id, _)| id.as_str()),
            )
            .collect::<HashSet<&str>>();
        if running.contains(id) {
            return true;
        }
        if running.len() >= limit {
            return false;
        }
        self.pending
            .insert(id.to_owned(), (tenant.to_owned(), now_ms));
        true
    }
}

struct Local {
    partition: i32,
    tenant: String,
    consumed: Ranges,
}

struct Worker {
    cfg: FleetConfig,
    producer: FleetProducer,
    view: StateView,
    ingest: Arc<IngestState>,
    engine: Arc<Engine>,
    reader: OnceLock<Arc<SegmentReader>>,
    local: Mutex<HashMap<String, Local>>,
    owned: Mutex<BTreeSet<i32>>,
    handoff: Arc<Mutex<HashSet<String>>>,
    inits: Mutex<HashMap<String, Vec<u8>>>,
    revoking: AtomicUsize,
    ready: Arc<dyn Fn(bool) + Send + Sync>,
    markers: AtomicU64,
    quota: Mutex<Quota>,
}

fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|e| e.into_inner())
}

/// Whether a stream in this state has stopped for good.
fn finished(state: &str) -> bool {
    state == "ended" || state == "failed"
}

impl Worker {
    fn record(&self, id: &str) -> Option<StateRecord> {
        let (mut view, next) = self.ingest.local_view(id)?;
        let (partition, consumed) = {
            let local = lock(&self.local);
            let l = local.get(id)?;
            (l.partition, l.consumed.to_api())
        };
        Some(self.state_of(id, &mut view, next, partition, consumed))
    }

    fn state_of(
        &self,
        id: &str,
        view: &mut StreamView,
        next: Option<u64>,
        partition: i32,
        consumed: Vec<SeqRange>,
    ) -> StateRecord {
        view.worker = Some(self.cfg.worker_id.clone());
        if view.source == "push" {
            view.consumed_segments = Some(consumed.clone());
        }
        let (policy_state, policy_version) = match self.engine.policy_state(id) {
            Some((s, v)) => (Some(s), Some(v)),
            None => (None, None),
        };
        StateRecord {
            v: VERSION,
            worker: self.cfg.worker_id.clone(),
            partition,
            updated_ms: self.engine.now_ms(),
            view: view.clone(),
            consumed,
            next_seq: next,
            policy_version,
            policy_state,
        }
    }

    fn publish(&self, records: Vec<(String, StateRecord)>, position: Option<(i32, i64)>) {
        let producer = &self.producer;
        let worker = self.cfg.worker_id.clone();
        let r = block_on(async {
            for (id, rec) in &records {
                let bytes = serde_json::to_vec(rec).expect("a state record is JSON");
                producer.state(id, Some(&bytes), None).await?;
            }
            if let Some((p, offset)) = position {
                let pos = Position {
                    v: VERSION,
                    offset,
                    worker,
                };
                let bytes = serde_json::to_vec(&pos).expect("JSON");
                producer
                    .state(&format!("__position/{p}"), Some(&bytes), Some(p))
                    .await?;
            }
            Ok::<_, firebreak_delivery::fleet::FleetError>(())
        });
        if let Err(e) = r {
            tracing::error!(error = %e, "fleet: publishing stream state failed");
        }
    }

    /// The previous owner's record of `id`, if any (of this schema version).
    fn previous(&self, id: &str) -> Option<StateRecord> {
        let e = self.view.get(id)?;
        serde_json::from_slice::<StateRecord>(&e.value)
            .ok()
            .filter(|r| r.v == VERSION)
    }

    /// Restores `id`'s policy state from its previous owner's record; returns the
    /// record.
    fn restore(&self, id: &str, tenant: &str) -> Option<StateRecord> {
        let rec = self.previous(id)?;
        if !finished(&rec.view.state)
            && let (Some(state), Some(version)) = (&rec.policy_state, &rec.policy_version)
        {
            self.engine
                .restore_policy_state(id, tenant, state.clone(), version);
        }
        Some(rec)
    }

    /// Pushed stream `id` running here (resumed from its previous owner's state).
    fn start_pushed(&self, id: &str, tenant: &str, partition: i32) -> bool {
        if lock(&self.local).contains_key(id) && self.ingest.is_running(id) {
            return true;
        }
        let rec = self.restore(id, tenant);
        let next = rec.as_ref().and_then(|r| r.next_seq).unwrap_or(0);
        if !self.ingest.owned_pushed(id, tenant, next) {
            tracing::warn!(stream = %id, "fleet: cannot start a pushed stream here (limit, quota or another tenant's)");
            return false;
        }
        if next > 0
            && let Some(init) = lock(&self.inits).get(id).cloned()
        {
            self.ingest.feed_raw(id, init);
        }
        let consumed = rec
            .as_ref()
            .map(|r| Ranges::from_api(&r.consumed))
            .unwrap_or_default();
        tracing::info!(stream = %id, partition, next, resumed = rec.is_some(), "fleet: pushed stream runs here");
        lock(&self.local).insert(
            id.to_owned(),
            Local {
                partition,
                tenant: tenant.to_owned(),
                consumed,
            },
        );
        self.announce(id);
        true
    }

    /// Publishes `id`'s state at once (a stream that starts here), so every worker's
    /// view, and so the fleet-wide quota, shows it before the next checkpoint.
    fn announce(&self, id: &str) {
        if let Some(r) = self.record(id) {
            self.publish(vec![(id.to_owned(), r)], None);
        }
    }

    fn marker(&self, p: i32) -> bool {
        let n = self.markers.fetch_add(1, Ordering::Relaxed);
        let key = format!("__marker/{}/{}/{n}", self.cfg.worker_id, std::process::id());
        if let Err(e) = block_on(self.producer.state(&key, Some(b"{\"v\":1}"), Some(p))) {
            tracing::error!(error = %e, partition = p, "fleet: producing a catch-up marker failed");
            return false;
        }
        self.view.wait_marker(&key, Duration::from_secs(60))
    }
}

impl FleetHandler for Worker {
    fn assigned(&self, partitions: &[i32]) {
        for &p in partitions {
            lock(&self.owned).insert(p);
            if !self.marker(p) {
                tracing::warn!(
                    partition = p,
                    "fleet: state topic not caught up; starting anyway"
                );
            }
            let position = self
                .view
                .get(&format!("__position/{p}"))
                .and_then(|e| serde_json::from_slice::<Position>(&e.value).ok())
                .map_or(0, |pos| pos.offset);
            // Pushed streams that were running continue here at once.
            for (id, e) in self.view.streams() {
                if e.partition != p {
                    continue;
                }
                let Ok(rec) = serde_json::from_slice::<StateRecord>(&e.value) else {
                    continue;
                };
                if rec.view.source == "push" && !finished(&rec.view.state) {
                    self.start_pushed(&id, &rec.view.tenant, p);
                }
            }
            tracing::info!(partition = p, position, "fleet: reading segments");
            if let Some(r) = self.reader.get() {
                r.add(p, position);
            }
        }
    }

    fn revoked(&self, partitions: &[i32]) {
        self.revoking.fetch_add(1, Ordering::AcqRel);
        (self.ready)(false);
        for &p in partitions {
            if !lock(&self.owned).remove(&p) {
                continue;
            }
            self.engine.metrics().fleet_partition_revoked(p);
            let position = self.reader.get().and_then(|r| r.remove(p));
            let moving: Vec<(String, Local)> = {
                let mut local = lock(&self.local);
                let ids: Vec<String> = local
                    .iter()
                    .filter(|(_, l)| l.partition == p)
                    .map(|(id, _)| id.clone())
                    .collect();
                ids.into_iter()
                    .filter_map(|id| local.remove(&id).map(|l| (id, l)))
                    .collect()
            };
            #[allow(clippy::type_complexity)]
            let stopped: Vec<(String, Local, Option<(StreamView, Option<u64>)>, bool)> =
                std::thread::scope(|scope| {
                    let handles: Vec<_> = moving
                        .into_iter()
                        .map(|(id, l)| {
                            scope.spawn(move || {
                                // A hand-off ends a pushed stream here: whether it had
                                // ended before says whether it goes on elsewhere.
                                let ended = self
                                    .ingest
                                    .local_view(&id)
                                    .is_none_or(|(v, _)| finished(&v.state));
                                lock(&self.handoff).insert(id.clone());
                                let last = self.ingest.hand_off(&id);
                                (id, l, last, ended)
                            })
                        })
                        .collect();
                    handles.into_iter().filter_map(|h| h.join().ok()).collect()
                });
            let mut records = Vec::new();
            for (id, l, last, ended) in stopped {
                lock(&self.handoff).remove(&id);
                if let Some((mut view, next)) = last {
                    let mut rec = self.state_of(&id, &mut view, next, p, l.consumed.to_api());
                    if !ended {
                        // It goes on elsewhere: the next owner starts it at once.
                        rec.view.state = "moving".into();
                    }
                    records.push((id.clone(), rec));
                }
                self.engine.forget_stream(&id);
            }
            tracing::info!(
                partition = p,
                streams = records.len(),
                ?position,
                "fleet: streams handed off"
            );
            self.publish(records, position.map(|o| (p, o)));
        }
        if self.revoking.fetch_sub(1, Ordering::AcqRel) == 1 {
            (self.ready)(true);
        }
    }

    fn registration(&self, partition: i32, stream: &str, value: Option<&[u8]>) {
        if !lock(&self.owned).contains(&partition) {
            return;
        }
        let Some(value) = value else {
            // Stopped through the API: it ends here (its incident closes).
            lock(&self.inits).remove(stream);
            if lock(&self.local).remove(stream).is_some() {
                self.ingest.remove(stream, None);
            }
            if let Err(e) = block_on(self.producer.state(stream, None, None)) {
                tracing::error!(error = %e, %stream, "fleet: state tombstone failed");
            }
            return;
        };
        let reg = match serde_json::from_slice::<Registration>(value) {
            Ok(r) if r.v == VERSION => r,
            Ok(r) => {
                tracing::warn!(%stream, version = r.v, "fleet: registration of another schema version skipped");
                return;
            }
            Err(e) => {
                tracing::warn!(%stream, error = %e, "fleet: unreadable registration skipped");
                return;
            }
        };
        if reg.push {
            if let Some(init) = reg
                .init
                .and_then(|b| base64::engine::general_purpose::STANDARD.decode(b).ok())
            {
                lock(&self.inits).insert(stream.to_owned(), init);
            }
            return;
        }
        let Some(spec) = reg.spec else { return };
        if lock(&self.local).contains_key(stream) && self.ingest.is_running(stream) {
            return;
        }
        if self
            .previous(stream)
            .is_some_and(|r| finished(&r.view.state))
        {
            // It ran to its end before (a registration read again after a move).
            return;
        }
        self.restore(stream, &reg.tenant);
        let started = if reg.trusted {
            match spec.validate("stream") {
                Ok(s) => self
                    .ingest
                    .register(&s, &reg.tenant)
                    .map_err(|e| format!("{e:?}")),
                Err(e) => Err(format!("{e:?}")),
            }
        } else {
            self.ingest
                .register_untrusted(&spec, &reg.tenant)
                .map(|_| ())
                .map_err(|e| format!("{e:?}"))
        };
        match started {
            Ok(()) => {
                tracing::info!(%stream, partition, "fleet: pulled stream runs here");
                lock(&self.local).insert(
                    stream.to_owned(),
                    Local {
                        partition,
                        tenant: reg.tenant,
                        consumed: Ranges::default(),
                    },
                );
                self.announce(stream);
            }
            Err(e) => tracing::warn!(%stream, error = %e, "fleet: registration not started"),
        }
    }

    fn segment(&self, partition: i32, event: SegmentEvent) {
        if !lock(&self.owned).contains(&partition) {
            return;
        }
        match event {
            SegmentEvent::Segment {
                stream,
                tenant,
                seq,
                bytes,
                accepted_ms,
            } => {
                if !self.start_pushed(&stream, &tenant, partition) {
                    return;
                }
                if let Some(l) = lock(&self.local).get_mut(&stream) {
                    if l.tenant != tenant {
                        return;
                    }
                    l.consumed.insert(seq);
                }
                let outcome = self.ingest.offer_blocking(&stream, seq, bytes, accepted_ms);
                let lag_ms = self.engine.now_ms().saturating_sub(accepted_ms);
                self.engine
                    .metrics()
                    .fleet_segment_consumed(partition, lag_ms);
                tracing::debug!(%stream, seq, ?outcome, lag_ms, "fleet: segment consumed");
            }
            SegmentEvent::End { stream, tenant } => {
                let ours = lock(&self.local)
                    .get(&stream)
                    .is_some_and(|l| l.tenant == tenant);
                if ours {
                    self.ingest.end_owned(&stream);
                }
            }
        }
    }

    fn checkpoint(&self, partition: i32, position: i64) {
        let ids: Vec<String> = lock(&self.local)
            .iter()
            .filter(|(_, l)| l.partition == partition)
            .map(|(id, _)| id.clone())
            .collect();
        let mut records = Vec::new();
        for id in ids {
            match self.record(&id) {
                Some(r) => records.push((id, r)),
                // Forgotten by the ingest (finished, evicted): its last record stays.
                None => {
                    lock(&self.local).remove(&id);
                }
            }
        }
        tracing::debug!(
            partition,
            position,
            streams = records.len(),
            "fleet: checkpoint"
        );
        self.publish(records, Some((partition, position)));
    }
}

/// Whether a tenant may run a stream ([`Fleet::admit`]).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Admission {
    Admitted,
    /// The id is another tenant's stream.
    Foreign,
    /// The tenant runs its fleet-wide quota of streams.
    OverQuota,
}

/// This worker's part in the fleet.
pub struct Fleet {
    worker: Arc<Worker>,
    membership: Mutex<Option<Membership>>,
    /// The heartbeat task.
    heartbeat: Mutex<Option<tokio::task::JoinHandle<()>>>,
}

impl std::fmt::Debug for Fleet {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Fleet")
            .field("worker", &self.worker.cfg.worker_id)
            .finish_non_exhaustive()
    }
}

impl Fleet {
    /// Creates the topics if needed, reads the state topic, joins the group,
    /// registers the config file's streams (trusted) and publishes a heartbeat every
    /// checkpoint, telling `on_workers` how many workers are alive after each.
    #[allow(clippy::too_many_arguments)]
    pub async fn start(
        cfg: FleetConfig,
        ingest: Arc<IngestState>,
        engine: Arc<Engine>,
        handoff: Arc<Mutex<HashSet<String>>>,
        ready: Arc<dyn Fn(bool) + Send + Sync>,
        on_workers: Arc<dyn Fn(usize) + Send + Sync>,
        config_streams: &[StreamSettings],
        default_tenant: &str,
    ) -> anyhow::Result<Arc<Fleet>> {
        let partitions = ensure_topics(&cfg).await?;
        tracing::info!(partitions, brokers = %cfg.brokers, "fleet: topics ready");
        let producer = FleetProducer::new(&cfg)?;
        let view = {
            let cfg = cfg.clone();
            tokio::task::spawn_blocking(move || StateView::start(&cfg)).await??
        };
        let worker = Arc::new(Worker {
            cfg: cfg.clone(),
            producer,
            view,
            ingest,
            engine,
            reader: OnceLock::new(),
            local: Mutex::new(HashMap::new()),
            owned: Mutex::new(BTreeSet::new()),
            handoff,
            inits: Mutex::new(HashMap::new()),
            revoking: AtomicUsize::new(0),
            ready,
            markers: AtomicU64::new(0),
            quota: Mutex::new(Quota::default()),
        });
        let reader = Arc::new(SegmentReader::start(&cfg, worker.clone())?);
        let _ = worker.reader.set(reader);
        let membership = Membership::join(&cfg, worker.clone())?;
        for s in config_streams {
            let spec = StreamSpec {
                id: s.id.clone(),
                hls: match &s.source {
                    StreamSource::Hls(u) => Some(u.clone()),
                    _ => None,
                },
                url: match &s.source {
                    StreamSource::Url(u) => Some(u.clone()),
                    _ => None,
                },
                file: match &s.source {
                    StreamSource::File(f) => Some(f.clone()),
                    _ => None,
                },
                sampling: None,
                tenant: s.tenant.clone(),
            };
            let reg = Registration {
                v: VERSION,
                tenant: s
                    .tenant
                    .clone()
                    .unwrap_or_else(|| default_tenant.to_owned()),
                push: false,
                spec: Some(spec),
                trusted: true,
                init: None,
            };
            let bytes = serde_json::to_vec(&reg)?;
            worker.producer.registration(&s.id, Some(&bytes)).await?;
        }
        let heartbeat = tokio::spawn(heartbeats(worker.clone(), on_workers));
        Ok(Arc::new(Fleet {
            worker,
            membership: Mutex::new(Some(membership)),
            heartbeat: Mutex::new(Some(heartbeat)),
        }))
    }

    /// Every stream of the fleet visible to `tenant` (`None`: all), from the state
    /// topic.
    pub fn list(&self, tenant: Option<&str>) -> Vec<StreamView> {
        self.worker
            .view
            .streams()
            .into_iter()
            .filter_map(|(_, e)| serde_json::from_slice::<StateRecord>(&e.value).ok())
            .filter(|r| r.v == VERSION && tenant.is_none_or(|t| r.view.tenant == t))
            .map(|r| r.view)
            .collect()
    }

    /// The tenant of stream `id`, if the fleet knows it.
    fn tenant_of(&self, id: &str) -> Option<String> {
        self.worker.previous(id).map(|r| r.view.tenant)
    }

    /// Whether `tenant` may run stream `id` (blocking: it reads every record of the
    /// state view): not if it is another tenant's, nor beyond the tenant's fleet-wide
    /// quota. A stream the view shows running for `tenant` is admitted without
    /// counting.
    fn admit(&self, tenant: &str, id: &str) -> Admission {
        let w = &self.worker;
        if let Some(r) = w.previous(id) {
            if r.view.tenant != tenant {
                return Admission::Foreign;
            }
            if !finished(&r.view.state) {
                return Admission::Admitted;
            }
        }
        let view: Vec<(String, String, bool)> = w
            .view
            .streams()
            .into_iter()
            .filter_map(|(id, e)| {
                let b = serde_json::from_slice::<Brief>(&e.value).ok()?;
                (b.v == VERSION).then(|| (id, b.view.tenant, finished(&b.view.state)))
            })
            .collect();
        let limit = w.ingest.max_streams_per_tenant();
        if lock(&w.quota).admit(&view, tenant, id, limit, w.engine.now_ms()) {
            Admission::Admitted
        } else {
            tracing::info!(%tenant, stream = %id, limit, "fleet: stream refused, the tenant's fleet-wide quota is reached");
            Admission::OverQuota
        }
    }

    /// [`Fleet::admit`] off the async runtime.
    async fn admit_async(self: &Arc<Self>, tenant: &str, id: &str) -> Admission {
        let (f, t, i) = (self.clone(), tenant.to_owned(), id.to_owned());
        tokio::task::spawn_blocking(move || f.admit(&t, &i))
            .await
            .unwrap_or(Admission::OverQuota)
    }

    /// Leaves the group (blocking): the owned streams are handed off first, and the
    /// heartbeat is withdrawn (the others count one worker less at once).
    pub fn leave(&self) {
        if let Some(h) = lock(&self.heartbeat).take() {
            h.abort();
            let w = &self.worker;
            let key = format!("{WORKER_KEY}{}", w.cfg.worker_id);
            if let Err(e) = block_on(w.producer.state(&key, None, None)) {
                tracing::warn!(error = %e, "fleet: withdrawing the heartbeat failed");
            }
        }
        if let Some(mut m) = lock(&self.membership).take() {
            m.leave();
        }
        if let Some(r) = self.worker.reader.get() {
            r.stop();
        }
    }
}

/// Publishes `w`'s heartbeat every checkpoint, then tells `on_workers` how many
/// workers are alive (a heartbeat within the last 5 checkpoints, 3 s at least).
async fn heartbeats(w: Arc<Worker>, on_workers: Arc<dyn Fn(usize) + Send + Sync>) {
    let every = w.cfg.checkpoint_every.max(Duration::from_millis(100));
    let window_ms = (every * 5).max(Duration::from_secs(3)).as_millis() as u64;
    let key = format!("{WORKER_KEY}{}", w.cfg.worker_id);
    let mut tick = tokio::time::interval(every);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tick.tick().await;
        let now = w.engine.now_ms();
        let beat = serde_json::to_vec(&Heartbeat {
            v: VERSION,
            at_ms: now,
        })
        .expect("JSON");
        if let Err(e) = w.producer.state(&key, Some(&beat), None).await {
            tracing::warn!(error = %e, "fleet: heartbeat not published");
        }
        on_workers(alive(&w.view.with_prefix(WORKER_KEY), now, window_ms));
    }
}

fn accepted(
    d: firebreak_delivery::fleet::Delivered,
    stream: String,
    topic: &str,
    sequence: Option<u64>,
) -> Response {
    (
        StatusCode::ACCEPTED,
        Json(FleetAccepted {
            stream,
            sequence,
            topic: topic.to_owned(),
            partition: d.partition,
            offset: d.offset,
        }),
    )
        .into_response()
}

fn unavailable(e: &firebreak_delivery::fleet::FleetError) -> Response {
    tracing::error!(error = %e, "fleet: the broker did not acknowledge");
    let mut r = error(
        StatusCode::SERVICE_UNAVAILABLE,
        "the fleet's broker did not acknowledge; retry",
    );
    r.headers_mut().insert(
        axum::http::header::RETRY_AFTER,
        axum::http::HeaderValue::from_static("1"),
    );
    r
}

/// Whether `bytes` begin with an ISO-BMFF `ftyp` box (an fMP4 init section).
fn is_fmp4_init(bytes: &[u8]) -> bool {
    bytes.len() >= 8 && &bytes[4..8] == b"ftyp"
}

/// `PUT /v1/streams/{id}/segments/{seq}` in fleet mode: produced, `202` after the
/// broker's acknowledgement.
pub async fn put_segment(
    fleet: Arc<Fleet>,
    caller: &Caller,
    id: String,
    seq: u64,
    body: Bytes,
) -> Response {
    // One read of the stream's record: another tenant's id, or the quota.
    match fleet.admit_async(&caller.tenant, &id).await {
        Admission::Admitted => {}
        Admission::Foreign => return error(StatusCode::NOT_FOUND, "no such stream"),
        Admission::OverQuota => return crate::http::ingest::quota_exceeded(),
    }
    let w = &fleet.worker;
    if seq == 0 {
        let reg = Registration {
            v: VERSION,
            tenant: caller.tenant.clone(),
            push: true,
            spec: None,
            trusted: false,
            init: is_fmp4_init(&body)
                .then(|| base64::engine::general_purpose::STANDARD.encode(&body)),
        };
        let bytes = serde_json::to_vec(&reg).expect("JSON");
        if let Err(e) = w.producer.registration(&id, Some(&bytes)).await {
            return unavailable(&e);
        }
    }
    match w
        .producer
        .segment(&id, &caller.tenant, seq, &body, w.engine.now_ms())
        .await
    {
        Ok(d) => accepted(d, id, &w.cfg.segments_topic, Some(seq)),
        Err(e) => unavailable(&e),
    }
}

/// `POST /v1/streams` in fleet mode: checked here (fields, source policy), produced to
/// the streams topic; the owner starts it.
pub async fn register(
    fleet: Arc<Fleet>,
    ingest: Arc<IngestState>,
    spec: StreamSpec,
    tenant: String,
) -> Response {
    let settings = match spec.validate("stream") {
        Ok(s) => s,
        Err(issues) => {
            let issues: Vec<String> = issues.iter().map(ToString::to_string).collect();
            return (
                StatusCode::BAD_REQUEST,
                Json(RegistrationInvalid {
                    error: issues.join("; "),
                    issues: Some(issues),
                }),
            )
                .into_response();
        }
    };
    let (url, schemes) = match &settings.source {
        StreamSource::Hls(u) => (u.clone(), API_HLS_SCHEMES),
        StreamSource::Url(u) => (u.clone(), API_URL_SCHEMES),
        StreamSource::File(_) => {
            return error(
                StatusCode::FORBIDDEN,
                "file sources are configured in the config file only",
            );
        }
    };
    if fleet.tenant_of(&spec.id).is_some_and(|t| t != tenant) {
        return error(StatusCode::CONFLICT, "this stream id is taken");
    }
    let net = ingest.net_policy().clone();
    let checked = tokio::task::spawn_blocking(move || {
        net.check(
            &url,
            schemes,
            &firebreak_media::ingest::guard::system_resolve,
        )
        .map(|_| ())
    })
    .await;
    if !matches!(checked, Ok(Ok(()))) {
        return error(
            StatusCode::BAD_REQUEST,
            "source not allowed: give an rtmp or srt URL (url) or an http(s) playlist (hls) \
             on an address this service may reach",
        );
    }
    let id = spec.id.clone();
    match fleet.admit_async(&tenant, &id).await {
        Admission::Admitted => {}
        Admission::Foreign => return error(StatusCode::CONFLICT, "this stream id is taken"),
        Admission::OverQuota => return crate::http::ingest::quota_exceeded(),
    }
    let reg = Registration {
        v: VERSION,
        tenant,
        push: false,
        spec: Some(spec),
        trusted: false,
        init: None,
    };
    let bytes = serde_json::to_vec(&reg).expect("JSON");
    let w = &fleet.worker;
    match w.producer.registration(&id, Some(&bytes)).await {
        Ok(d) => accepted(d, id, &w.cfg.streams_topic, None),
        Err(e) => unavailable(&e),
    }
}

/// `DELETE /v1/streams/{id}` in fleet mode: a tombstone on the streams topic.
pub async fn stop(fleet: Arc<Fleet>, caller: &Caller, id: String) -> Response {
    let tenant = caller.tenant_filter();
    match fleet.tenant_of(&id) {
        Some(t) if tenant.is_none_or(|c| c == t) => {}
        _ => return error(StatusCode::NOT_FOUND, "no such stream"),
    }
    let w = &fleet.worker;
    match w.producer.registration(&id, None).await {
        Ok(d) => accepted(d, id, &w.cfg.streams_topic, None),
        Err(e) => unavailable(&e),
    }
}

/// `POST /v1/streams/{id}/end` in fleet mode: an end record after the stream's
/// segments.
pub async fn end(fleet: Arc<Fleet>, caller: &Caller, id: String) -> Response {
    if fleet.tenant_of(&id).is_some_and(|t| t != caller.tenant) {
        return error(StatusCode::NOT_FOUND, "no such stream");
    }
    let w = &fleet.worker;
    match w.producer.end(&id, &caller.tenant).await {
        Ok(d) => accepted(d, id, &w.cfg.segments_topic, None),
        Err(e) => unavailable(&e),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ranges_merge_in_any_order() {
        let mut r = Ranges::default();
        for n in [5, 1, 2, 9, 3, 7, 6, 0, 2] {
            r.insert(n);
        }
        assert_eq!(r.0, vec![(0, 3), (5, 7), (9, 9)]);
        r.insert(4);
        r.insert(8);
        assert_eq!(r.0, vec![(0, 9)]);
        assert_eq!(Ranges::from_api(&r.to_api()), r);
    }

    fn rec(id: &str, tenant: &str, finished: bool) -> (String, String, bool) {
        (id.into(), tenant.into(), finished)
    }

    #[test]
    fn the_quota_counts_the_view_and_this_workers_recent_admissions() {
        let mut q = Quota::default();
        // The view: a1 runs for tenant a, a0 ended, b1 runs for tenant b.
        let view = vec![
            rec("a0", "a", true),
            rec("a1", "a", false),
            rec("b1", "b", false),
        ];
        // Limit 3 for a: a1 counts, a0 does not; two more fit, the third does not.
        assert!(q.admit(&view, "a", "a2", 3, 1_000));
        assert!(q.admit(&view, "a", "a3", 3, 1_001));
        assert!(!q.admit(&view, "a", "a4", 3, 1_002));
        // A stream already counted is admitted again (its next segments).
        assert!(q.admit(&view, "a", "a1", 3, 1_003));
        assert!(q.admit(&view, "a", "a3", 3, 1_003));
        // Tenant b has its own count.
        assert!(q.admit(&view, "b", "b2", 2, 1_004));
        assert!(!q.admit(&view, "b", "b3", 2, 1_004));
        // The view now shows a2 running and a1 ended: a2 is counted once (the view's
        // record replaces the pending one), a1 not at all, so a4 fits.
        let view = vec![
            rec("a1", "a", true),
            rec("a2", "a", false),
            rec("b1", "b", false),
        ];
        assert!(q.admit(&view, "a", "a4", 3, 2_000));
        assert!(!q.admit(&view, "a", "a5", 3, 2_000));
        // A pending admission the view never shows stops counting after PENDING_MS:
        // a3 and a4 drop out, a2 still runs.
        let later = 2_000 + PENDING_MS;
        assert!(q.admit(&view, "a", "a5", 3, later));
        assert!(q.admit(&view, "a", "a6", 3, later));
        assert!(!q.admit(&view, "a", "a7", 3, later));
    }

    #[test]
    fn workers_alive_are_those_with_a_recent_heartbeat() {
        let beat = |id: &str, v: u32, at_ms: u64| {
            (
                format!("{WORKER_KEY}{id}"),
                firebreak_delivery::fleet::StateEntry {
                    partition: 0,
                    value: serde_json::to_vec(&Heartbeat { v, at_ms }).unwrap(),
                },
            )
        };
        let beats = vec![
            beat("a", VERSION, 10_000),
            beat("b", VERSION, 7_000),
            beat("c", VERSION, 6_999),
            beat("d", VERSION + 1, 10_000),
            (
                format!("{WORKER_KEY}e"),
                firebreak_delivery::fleet::StateEntry {
                    partition: 0,
                    value: b"not JSON".to_vec(),
                },
            ),
        ];
        // Within 3 s of 10 s: a and b (c is 1 ms too old, d of another version, e
        // unreadable).
        assert_eq!(alive(&beats, 10_000, 3_000), 2);
        // None recent: this worker still counts itself.
        assert_eq!(alive(&beats, 60_000, 3_000), 1);
        assert_eq!(alive(&[], 0, 3_000), 1);
    }

    #[test]
    fn an_fmp4_init_section_is_recognised() {
        assert!(is_fmp4_init(b"\0\0\0\x18ftypiso5"));
        assert!(!is_fmp4_init(b"\x47\x40\x00\x10 transport stream"));
    }
}

//! Fleet-shared state on compacted topics against a real broker (tansu): bank entries
//! on `firebreak.banks` and policy versions on `firebreak.policy`, followed live by
//! several in-process workers (each a whole `Daemon` with its own engine, matcher,
//! metrics and data directory).
//!
//! `measure_*` (ignored; run with `--ignored --nocapture`) prints the figures of the
//! fleet note: publish-to-matchable delay on every reader, and a fresh worker's time to
//! ready with a 1M-entry bank.

use std::path::Path;
use std::sync::Arc;
use std::time::{Duration, Instant};

use firebreak::config::ServiceConfig;
use firebreak::daemon::Daemon;
use firebreak::engine::Engine;
use firebreak::engine::feeds::{
    self, BANK_SCHEMA, BankRecord, FeedSettings, FeedsHandle, WireSignal,
};
use firebreak::metrics::{SharedError, SharedTopic};
use firebreak_delivery::compacted::{self, Writer};
use firebreak_hashing::Hash256;
use firebreak_matching::bank::{Bank, ImportPolicy};
use firebreak_matching::lists::{Record, Signal};
use firebreak_matching::mapfile::LoadMode;
use firebreak_matching::store::{BankStore, MatcherOptions, MatcherSource};
use firebreak_policy::config::PolicyConfig;
use firebreak_testkit::daemon::tokens_config;
use firebreak_testkit::tansu::TansuBroker;

const DEADLINE: Duration = Duration::from_secs(120);

fn settings(broker: &TansuBroker) -> FeedSettings {
    let mut s = FeedSettings::new(&broker.bootstrap);
    s.partitions = 3;
    s.replication = 1;
    s.marker_interval = Duration::from_millis(500);
    s
}

fn runtime() -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap()
}

/// A worker: a daemon built over `data` (its banks in `data/banks`) and its feeds.
struct Worker {
    daemon: Daemon,
    feeds: Option<FeedsHandle>,
}

impl Worker {
    fn start(data: &Path, settings: &FeedSettings) -> Worker {
        let text = format!(
            "data_dir = \"{}\"\nworker_id = \"w\"\n{}",
            data.display(),
            tokens_config()
        );
        let config = ServiceConfig::parse(&text, data).unwrap();
        let daemon = Daemon::build(config).unwrap();
        let feeds = feeds::spawn(settings, daemon.engine(), data.join("banks")).unwrap();
        Worker {
            daemon,
            feeds: Some(feeds),
        }
    }

    fn engine(&self) -> &Arc<Engine> {
        self.daemon.engine()
    }

    fn wait_ready(&self) {
        let started = Instant::now();
        while !self.feeds.as_ref().unwrap().ready() {
            assert!(started.elapsed() < DEADLINE, "feeds never caught up");
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    fn matches(&self, hash: &Hash256) -> Vec<String> {
        self.engine()
            .detectors()
            .matcher
            .match_pdq(hash)
            .matches
            .iter()
            .map(|h| format!("{}/{}", h.entry.bank, h.entry.id))
            .collect()
    }

    fn errors(&self, reason: SharedError) -> u64 {
        self.engine()
            .metrics()
            .shared_errors(SharedTopic::Banks, reason)
    }

    fn stop(mut self) {
        self.feeds.take().unwrap().stop();
    }
}

/// Polls `check` until true (generous deadline).
fn eventually(what: &str, mut check: impl FnMut() -> bool) {
    let started = Instant::now();
    while !check() {
        assert!(started.elapsed() < DEADLINE, "never: {what}");
        std::thread::sleep(Duration::from_millis(5));
    }
}

fn hash(i: u64) -> Hash256 {
    // Far-apart hashes: splitmix64 limbs.
    let mut s = i.wrapping_mul(0x9E37_79B9_7F4A_7C15) ^ 0x5555;
    let mut next = || {
        s = s.wrapping_add(0x9E37_79B9_7F4A_7C15);
        let mut z = s;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^ (z >> 31)
    };
    Hash256::from_limbs([next(), next(), next(), next()])
}

fn entry_record(bank: &str, id: &str, h: &Hash256) -> BankRecord {
    BankRecord {
        bank: bank.into(),
        negative: false,
        id: id.into(),
        signal: WireSignal::Pdq {
            hash: h.to_hex(),
            quality: Some(100),
        },
        labels: vec!["crisis".into()],
        tenant: None,
        metadata: serde_json::Map::new(),
    }
}

async fn put(writer: &Writer, r: &BankRecord) {
    writer
        .put(&r.key(), BANK_SCHEMA, &serde_json::to_vec(r).unwrap())
        .await
        .unwrap();
}

fn writer(broker: &TansuBroker, s: &FeedSettings, rt: &tokio::runtime::Runtime) -> Writer {
    rt.block_on(compacted::ensure_topic(
        &s.shared(),
        &s.banks_topic,
        s.partitions,
        s.replication,
    ))
    .unwrap();
    let _ = broker;
    Writer::new(&s.shared(), &s.banks_topic).unwrap()
}

#[test]
fn an_entry_and_a_policy_version_published_reach_both_workers_and_a_tombstone_removes_the_entry() {
    let broker = TansuBroker::start().unwrap();
    let s = settings(&broker);
    let (da, db) = (tempfile::tempdir().unwrap(), tempfile::tempdir().unwrap());
    let a = Worker::start(da.path(), &s);
    let b = Worker::start(db.path(), &s);
    a.wait_ready();
    b.wait_ready();
    let rt = runtime();
    let w = writer(&broker, &s, &rt);
    let h = hash(1);
    assert!(a.matches(&h).is_empty() && b.matches(&h).is_empty());
    rt.block_on(put(&w, &entry_record("crisis", "live-1", &h)));
    eventually("the entry matches on both", || {
        a.matches(&h) == ["crisis/live-1"] && b.matches(&h) == ["crisis/live-1"]
    });
    rt.block_on(w.delete("crisis/live-1", BANK_SCHEMA)).unwrap();
    eventually("the tombstone removes it on both", || {
        a.matches(&h).is_empty() && b.matches(&h).is_empty()
    });

    // A policy version: both apply the active one.
    let policy = PolicyConfig::from_toml(
        "version = \"fleet-v2\"\ntiers = [\"crisis\"]\n[[rule]]\nname = \"any\"\nkind = \"hash_match\"\ntier = \"crisis\"\n",
    )
    .unwrap();
    assert_ne!(a.engine().policy().config().version, "fleet-v2");
    rt.block_on(compacted::ensure_topic(
        &s.shared(),
        &s.policy_topic,
        s.partitions,
        s.replication,
    ))
    .unwrap();
    let pw = Writer::new(&s.shared(), &s.policy_topic).unwrap();
    let record = rt
        .block_on(feeds::publish_policy_record(
            &pw,
            feeds::next_policy_record(None, "default", &policy, "op", 1, true, None),
        ))
        .unwrap();
    eventually("both run fleet-v2", || {
        a.engine().policy().config().version == "fleet-v2"
            && b.engine().policy().config().version == "fleet-v2"
    });
    // A shadow version does not change what runs; the record is seen by both.
    let builtin = PolicyConfig::builtin();
    let shadow = rt
        .block_on(feeds::publish_policy_record(
            &pw,
            feeds::next_policy_record(Some(&record), "default", &builtin, "op", 2, false, None),
        ))
        .unwrap();
    eventually("both saw the shadow", || {
        [&a, &b]
            .iter()
            .all(|w| w.feeds.as_ref().unwrap().policy_record() == Some(shadow.clone()))
    });
    assert_eq!(a.engine().policy().config().version, "fleet-v2");
    assert_eq!(b.engine().policy().config().version, "fleet-v2");
    a.stop();
    b.stop();
}

/// A reload rebuilds the matcher from the bank files. The feed saves them now and then
/// (here: not within the test), so entries it applied since are in no file: they still
/// match after the reload, and records that follow reach the new matcher.
#[test]
fn a_reload_keeps_the_bank_records_applied_but_not_yet_saved() {
    let broker = TansuBroker::start().unwrap();
    let mut s = settings(&broker);
    s.snapshot_interval = Duration::from_secs(3600);
    let d = tempfile::tempdir().unwrap();
    let a = Worker::start(d.path(), &s);
    a.wait_ready();
    let rt = runtime();
    let w = writer(&broker, &s, &rt);
    let (h1, h2) = (hash(11), hash(12));
    rt.block_on(put(&w, &entry_record("crisis", "live-1", &h1)));
    eventually("the entry matches", || a.matches(&h1) == ["crisis/live-1"]);
    let file = d.path().join("banks/crisis.fbank");
    assert!(
        !file.exists(),
        "the bank was saved: the test proves nothing"
    );
    let before = a.engine().detectors();
    let result = a.daemon.reload("test").unwrap();
    assert!(
        !Arc::ptr_eq(&before, &a.engine().detectors()),
        "the reload did not build a new matcher"
    );
    assert!(
        result.banks.is_empty(),
        "the files hold no bank: {:?}",
        result.banks
    );
    assert_eq!(a.matches(&h1), ["crisis/live-1"]);
    rt.block_on(put(&w, &entry_record("crisis", "live-2", &h2)));
    eventually("a record after the reload matches", || {
        a.matches(&h2) == ["crisis/live-2"]
    });
    assert_eq!(a.matches(&h1), ["crisis/live-1"]);
    // Stopping saves the bank: both entries are in the file.
    let config = a.engine().detectors().matcher.config();
    a.stop();
    let store = BankStore::new(d.path().join("banks"));
    let bank = store.load_all().unwrap().banks.remove(0).bank;
    assert_eq!(bank.name, "crisis");
    let mut ids: Vec<String> = bank.entries().iter().map(|e| e.id.clone()).collect();
    ids.sort();
    assert_eq!(ids, ["live-1", "live-2"]);
    // And the matcher snapshot of it, which the next start loads instead of building.
    let loaded = store
        .load_matcher(MatcherOptions {
            config,
            threads: 1,
            snapshot: Some(LoadMode::Read),
            save: false,
        })
        .unwrap();
    assert!(
        matches!(loaded.source, MatcherSource::Snapshot),
        "{:?}",
        loaded.source
    );
    for (h, id) in [(h1, "live-1"), (h2, "live-2")] {
        let found = loaded.matcher.match_pdq(&h);
        assert_eq!(found.matches.len(), 1);
        assert_eq!(&*found.matches[0].entry.id, id);
    }
}

fn bank_of(entries: &[(String, Hash256)]) -> Bank {
    let mut bank = Bank::new("crisis", false);
    let records = entries
        .iter()
        .enumerate()
        .map(|(i, (id, h))| Record {
            line: i + 1,
            id: Some(id.clone()),
            signal: Signal::Pdq {
                hash: *h,
                quality: Some(100),
            },
            labels: vec![],
            delete: false,
        })
        .collect();
    let report = bank.import(records, vec![], ImportPolicy::default());
    assert_eq!(report.added, entries.len());
    bank
}

fn copy_dir(from: &Path, to: &Path) {
    std::fs::create_dir_all(to).unwrap();
    for e in std::fs::read_dir(from).unwrap() {
        let e = e.unwrap();
        std::fs::copy(e.path(), to.join(e.file_name())).unwrap();
    }
}

#[test]
fn a_fresh_worker_from_a_snapshot_reads_only_what_follows_it_and_skips_bad_records() {
    let broker = TansuBroker::start().unwrap();
    let s = settings(&broker);
    let rt = runtime();
    let w = writer(&broker, &s, &rt);
    // Before the snapshot: five entries and one corrupt record.
    for i in 0..5 {
        rt.block_on(put(
            &w,
            &entry_record("crisis", &format!("e{i}"), &hash(100 + i)),
        ));
    }
    rt.block_on(w.put("crisis/bad-early", BANK_SCHEMA, b"{not json"))
        .unwrap();
    let da = tempfile::tempdir().unwrap();
    let a = Worker::start(da.path(), &s);
    a.wait_ready();
    eventually("worker A has the five", || {
        (0..5).all(|i| !a.matches(&hash(100 + i)).is_empty())
    });
    assert_eq!(a.errors(SharedError::Corrupt), 1);
    a.stop();
    // A's snapshot records where it stopped: past all six records.
    let snap = BankStore::new(da.path().join("banks"))
        .load("crisis")
        .unwrap()
        .unwrap();
    let position = snap.position.clone().expect("a position");
    assert_eq!(position.topic, "firebreak.banks");
    assert!(position.offsets.values().sum::<i64>() >= 6, "{position:?}");
    assert_eq!(snap.len(), 5);

    // After it: two entries, one corrupt and one of an unknown schema version.
    for i in 5..7 {
        rt.block_on(put(
            &w,
            &entry_record("crisis", &format!("e{i}"), &hash(100 + i)),
        ));
    }
    rt.block_on(w.put("crisis/bad-late", BANK_SCHEMA, b"\xff\xfe"))
        .unwrap();
    rt.block_on(w.put(
        "crisis/future",
        BANK_SCHEMA + 1,
        &serde_json::to_vec(&entry_record("crisis", "future", &hash(999))).unwrap(),
    ))
    .unwrap();

    // B starts from a copy of A's snapshot: it has all seven, and of the bad records
    // it saw only those after the snapshot's offsets.
    let db = tempfile::tempdir().unwrap();
    copy_dir(&da.path().join("banks"), &db.path().join("banks"));
    let b = Worker::start(db.path(), &s);
    b.wait_ready();
    for i in 0..7 {
        assert_eq!(b.matches(&hash(100 + i)), [format!("crisis/e{i}")], "e{i}");
    }
    assert!(
        b.matches(&hash(999)).is_empty(),
        "an unknown schema is not applied"
    );
    assert_eq!(
        b.errors(SharedError::Corrupt),
        1,
        "only the late corrupt record"
    );
    assert_eq!(b.errors(SharedError::UnknownSchema), 1);
    b.stop();
}

fn percentile(sorted: &[f64], p: f64) -> f64 {
    sorted[((sorted.len() - 1) as f64 * p).round() as usize]
}

/// Publish-to-matchable delay on two workers (each entry published, then both polled
/// until it matches), and a fresh worker's time to ready from a 1M-entry snapshot.
#[test]
#[ignore = "measurement: run with --ignored --nocapture"]
fn measure_propagation_and_fresh_worker_readiness() {
    let broker = TansuBroker::start().unwrap();
    let mut s = settings(&broker);
    s.marker_interval = Duration::from_secs(5);
    let rt = runtime();
    let w = writer(&broker, &s, &rt);
    let (da, db) = (tempfile::tempdir().unwrap(), tempfile::tempdir().unwrap());
    let a = Worker::start(da.path(), &s);
    let b = Worker::start(db.path(), &s);
    a.wait_ready();
    b.wait_ready();
    let n: u64 = std::env::var("FIREBREAK_MEASURE_ENTRIES")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(200);
    let mut delays = Vec::new();
    for i in 0..n {
        let h = hash(10_000 + i);
        let started = Instant::now();
        rt.block_on(put(&w, &entry_record("crisis", &format!("m{i}"), &h)));
        eventually("matchable on both", || {
            !a.matches(&h).is_empty() && !b.matches(&h).is_empty()
        });
        delays.push(started.elapsed().as_secs_f64() * 1000.0);
    }
    delays.sort_by(f64::total_cmp);
    println!(
        "publish (acks=all) -> matchable on 2 workers, {n} entries: p50 {:.1} ms, p99 {:.1} ms, max {:.1} ms",
        percentile(&delays, 0.5),
        percentile(&delays, 0.99),
        delays[delays.len() - 1]
    );
    a.stop();
    b.stop();

    // A fresh worker with a 1M-entry bank snapshot at the topic's current end.
    let big: u64 = std::env::var("FIREBREAK_MEASURE_BANK")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(1_000_000);
    let dc = tempfile::tempdir().unwrap();
    let position = BankStore::new(da.path().join("banks"))
        .load("crisis")
        .unwrap()
        .unwrap()
        .position
        .unwrap();
    let entries: Vec<(String, Hash256)> = (0..big)
        .map(|i| (format!("b{i}"), hash(1 << 40 | i)))
        .collect();
    let mut bank = bank_of(&entries);
    drop(entries);
    bank.position = Some(position);
    BankStore::new(dc.path().join("banks")).save(&bank).unwrap();
    drop(bank);
    let started = Instant::now();
    let c = Worker::start(dc.path(), &s);
    let built = started.elapsed();
    c.wait_ready();
    let ready = started.elapsed();
    assert!(!c.matches(&hash(1 << 40 | (big - 1))).is_empty());
    println!(
        "fresh worker, {big}-entry snapshot: daemon built (snapshot load + index) {:.2} s, feeds caught up {:.2} s after start",
        built.as_secs_f64(),
        ready.as_secs_f64()
    );
    c.stop();

    // Catch-up from an empty snapshot over `records` topic records.
    let records: u64 = std::env::var("FIREBREAK_MEASURE_TOPIC")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(0);
    if records > 0 {
        let started = Instant::now();
        let w = Arc::new(w);
        rt.block_on(async {
            let mut pending = tokio::task::JoinSet::new();
            for i in 0..records {
                let r = entry_record("topic", &format!("t{i}"), &hash(1 << 50 | i));
                let value = serde_json::to_vec(&r).unwrap();
                let w = w.clone();
                pending.spawn(async move { w.put(&r.key(), BANK_SCHEMA, &value).await.unwrap() });
                if pending.len() == 5000 {
                    while pending.join_next().await.is_some() {}
                }
            }
            while pending.join_next().await.is_some() {}
        });
        println!(
            "published {records} records in {:.1} s",
            started.elapsed().as_secs_f64()
        );
        let dd = tempfile::tempdir().unwrap();
        let started = Instant::now();
        let d = Worker::start(dd.path(), &s);
        d.wait_ready();
        let last = hash(1 << 50 | (records - 1));
        assert_eq!(d.matches(&last), [format!("topic/t{}", records - 1)]);
        println!(
            "fresh worker, empty snapshot, {records} topic records: ready after {:.2} s",
            started.elapsed().as_secs_f64()
        );
        d.stop();
    }
}

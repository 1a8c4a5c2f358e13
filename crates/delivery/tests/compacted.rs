//! Shared compacted topics against tansu: keyed records and tombstones with their
//! schema header, readers on every partition from given offsets, and catch-up by
//! markers read back from every partition.

use std::collections::{BTreeMap, BTreeSet};
use std::time::{Duration, Instant};

use firebreak_delivery::compacted::{self, Event, Reader, SharedConfig, SharedRecord, Writer};
use firebreak_testkit::tansu::TansuBroker;

const DEADLINE: Duration = Duration::from_secs(90);

fn runtime() -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap()
}

/// Reads until caught up (a round started first); returns the records read.
fn read_to_catch_up(reader: &mut Reader) -> Vec<SharedRecord> {
    reader.start_catch_up().unwrap();
    let started = Instant::now();
    let mut out = Vec::new();
    loop {
        assert!(started.elapsed() < DEADLINE, "not caught up: {reader:?}");
        match reader.poll(Duration::from_millis(200)) {
            Some(Ok(Event::Record(r))) => out.push(r),
            Some(Ok(Event::CaughtUp)) => return out,
            Some(Err(e)) => panic!("{e}"),
            None => {}
        }
    }
}

#[test]
fn records_tombstones_offsets_and_markers_over_partitions() {
    let broker = TansuBroker::start().unwrap();
    let config = SharedConfig::new(&broker.bootstrap);
    let topic = "firebreak.banks";
    let rt = runtime();
    rt.block_on(compacted::ensure_topic(&config, topic, 4, 1))
        .unwrap();
    // Creating it again is not an error.
    rt.block_on(compacted::ensure_topic(&config, topic, 4, 1))
        .unwrap();
    let writer = Writer::new(&config, topic).unwrap();
    let mut written = BTreeMap::new();
    for i in 0..40 {
        let key = format!("bank/e{i}");
        let w = rt
            .block_on(writer.put(&key, 1, format!("v{i}").as_bytes()))
            .unwrap();
        written.insert(key, w);
    }
    let partitions: BTreeSet<i32> = written.values().map(|w| w.partition).collect();
    assert!(
        partitions.len() > 1,
        "40 keys should spread over partitions: {partitions:?}"
    );

    // A reader from the beginning reads all 40, with their schema, then catches up
    // (its markers are on all 4 partitions, including any without records).
    let mut a = Reader::open(&config, topic, &BTreeMap::new(), DEADLINE).unwrap();
    assert_eq!(a.partitions(), 4);
    assert!(!a.caught_up());
    let got = read_to_catch_up(&mut a);
    assert!(a.caught_up());
    assert_eq!(got.len(), 40);
    for r in &got {
        let key = String::from_utf8(r.key.clone()).unwrap();
        let w = written[&key];
        assert_eq!((r.partition, r.offset), (w.partition, w.offset), "{key}");
        assert_eq!(r.schema, Some(1));
        assert_eq!(
            r.value.as_deref(),
            Some(format!("v{}", &key["bank/e".len()..]).as_bytes())
        );
    }
    assert_eq!(a.lag(), 0);
    let position = a.position().clone();

    // A second reader sees the first one's markers but skips them; a tombstone and a
    // record written now are all it reads after position.
    let tomb = rt.block_on(writer.delete("bank/e3", 1)).unwrap();
    let late = rt.block_on(writer.put("bank/late", 2, b"late")).unwrap();
    let mut b = Reader::open(&config, topic, &position, DEADLINE).unwrap();
    let got = read_to_catch_up(&mut b);
    let keys: Vec<(String, Option<Vec<u8>>, Option<u32>)> = got
        .iter()
        .map(|r| {
            (
                String::from_utf8(r.key.clone()).unwrap(),
                r.value.clone(),
                r.schema,
            )
        })
        .collect();
    let mut keys_sorted = keys.clone();
    keys_sorted.sort();
    assert_eq!(
        keys_sorted,
        vec![
            ("bank/e3".to_string(), None, Some(1)),
            ("bank/late".to_string(), Some(b"late".to_vec()), Some(2)),
        ]
    );
    assert!(b.position()[&tomb.partition] > tomb.offset);
    assert!(b.position()[&late.partition] > late.offset);

    // The first reader, still open, reads the same two, and a new round catches up
    // again; before reading, its lag counts at least those two records.
    a.start_catch_up().unwrap();
    assert!(a.lag() >= 2, "lag {} before reading two records", a.lag());
    let started = Instant::now();
    let mut seen = Vec::new();
    loop {
        assert!(started.elapsed() < DEADLINE);
        match a.poll(Duration::from_millis(200)) {
            Some(Ok(Event::Record(r))) => seen.push(String::from_utf8(r.key).unwrap()),
            Some(Ok(Event::CaughtUp)) => break,
            Some(Err(e)) => panic!("{e}"),
            None => {}
        }
    }
    seen.sort();
    assert_eq!(seen, ["bank/e3", "bank/late"]);
    assert_eq!(a.lag(), 0);
}

#[test]
fn a_missing_topic_is_an_error_not_a_hang() {
    let broker = TansuBroker::start().unwrap();
    let config = SharedConfig::new(&broker.bootstrap);
    let r = Reader::open(
        &config,
        "no-such-topic",
        &BTreeMap::new(),
        Duration::from_secs(20),
    );
    assert!(r.is_err());
}

//! The fleet's Kafka side against tansu: topics created with equal partition counts,
//! two group members share the partitions (cooperative-sticky), and a segment larger
//! than the message limit produced by one reaches its owner's reader whole.

use std::collections::BTreeMap;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use firebreak_delivery::fleet::{
    FleetConfig, FleetHandler, FleetProducer, Membership, SegmentEvent, SegmentReader,
    ensure_topics,
};
use firebreak_testkit::tansu::TansuBroker;

fn config(bootstrap: &str, worker: &str) -> FleetConfig {
    FleetConfig {
        brokers: bootstrap.into(),
        streams_topic: "t.streams".into(),
        segments_topic: "t.segments".into(),
        state_topic: "t.state".into(),
        group_id: "t-workers".into(),
        partitions: 4,
        replication: 1,
        segment_retention_ms: 600_000,
        max_message_bytes: 1000,
        session_timeout_ms: 6000,
        assignment: std::env::var("FLEET_ASSIGNMENT")
            .unwrap_or_else(|_| "cooperative-sticky".into()),
        checkpoint_every: Duration::from_millis(500),
        properties: BTreeMap::new(),
        worker_id: worker.into(),
    }
}

#[derive(Default)]
struct Recorder {
    owned: Mutex<Vec<i32>>,
    revocations: Mutex<Vec<Vec<i32>>>,
    segments: Mutex<Vec<(i32, SegmentEvent)>>,
    reader: Mutex<Option<Arc<SegmentReader>>>,
}

impl FleetHandler for Recorder {
    fn assigned(&self, partitions: &[i32]) {
        self.owned.lock().unwrap().extend_from_slice(partitions);
        if let Some(r) = self.reader.lock().unwrap().as_ref() {
            for &p in partitions {
                r.add(p, 0);
            }
        }
    }
    fn revoked(&self, partitions: &[i32]) {
        self.owned
            .lock()
            .unwrap()
            .retain(|p| !partitions.contains(p));
        self.revocations.lock().unwrap().push(partitions.to_vec());
        if let Some(r) = self.reader.lock().unwrap().as_ref() {
            for &p in partitions {
                r.remove(p);
            }
        }
    }
    fn registration(&self, _: i32, _: &str, _: Option<&[u8]>) {}
    fn segment(&self, partition: i32, event: SegmentEvent) {
        self.segments.lock().unwrap().push((partition, event));
    }
    fn checkpoint(&self, _: i32, _: i64) {}
}

fn wait(what: &str, secs: u64, mut f: impl FnMut() -> bool) {
    let started = Instant::now();
    while !f() {
        assert!(
            started.elapsed() < Duration::from_secs(secs),
            "timed out: {what}"
        );
        std::thread::sleep(Duration::from_millis(50));
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_members_share_partitions_and_a_chunked_segment_arrives_whole() {
    let broker = TansuBroker::start().unwrap();
    let a_cfg = config(&broker.bootstrap, "a");
    assert_eq!(ensure_topics(&a_cfg).await.unwrap(), 4);
    // A second call (another worker starting) keeps the topics.
    assert_eq!(ensure_topics(&a_cfg).await.unwrap(), 4);

    let a = Arc::new(Recorder::default());
    *a.reader.lock().unwrap() = Some(Arc::new(SegmentReader::start(&a_cfg, a.clone()).unwrap()));
    let started = Instant::now();
    let _ma = Membership::join(&a_cfg, a.clone()).unwrap();
    tokio::task::spawn_blocking({
        let a = a.clone();
        move || {
            wait("a owns every partition", 60, || {
                a.owned.lock().unwrap().len() == 4
            })
        }
    })
    .await
    .unwrap();
    eprintln!("first member assigned after {:?}", started.elapsed());

    let b_cfg = config(&broker.bootstrap, "b");
    let b = Arc::new(Recorder::default());
    *b.reader.lock().unwrap() = Some(Arc::new(SegmentReader::start(&b_cfg, b.clone()).unwrap()));
    let started = Instant::now();
    let _mb = Membership::join(&b_cfg, b.clone()).unwrap();
    tokio::task::spawn_blocking({
        let (a, b) = (a.clone(), b.clone());
        move || {
            wait("the partitions are shared", 90, || {
                let (oa, ob) = (
                    a.owned.lock().unwrap().clone(),
                    b.owned.lock().unwrap().clone(),
                );
                !oa.is_empty()
                    && !ob.is_empty()
                    && oa.len() + ob.len() == 4
                    && oa.iter().all(|p| !ob.contains(p))
            })
        }
    })
    .await
    .unwrap();
    let revoked = a.revocations.lock().unwrap().clone();
    eprintln!(
        "shared after {:?}: a {:?}, b {:?}, a's revocations {revoked:?}",
        started.elapsed(),
        a.owned.lock().unwrap(),
        b.owned.lock().unwrap()
    );
    if a_cfg.assignment == "cooperative-sticky" {
        // Incremental: a gave up only what b took.
        let given: usize = revoked.iter().map(Vec::len).sum();
        assert_eq!(given, b.owned.lock().unwrap().len(), "{revoked:?}");
    }

    let producer = FleetProducer::new(&a_cfg).unwrap();
    let bytes: Vec<u8> = (0..3500u32).map(|i| (i % 253) as u8).collect();
    let d = producer
        .segment("cam-1", "platform", 3, &bytes, 42)
        .await
        .unwrap();
    let owner = if a.owned.lock().unwrap().contains(&d.partition) {
        a.clone()
    } else {
        b.clone()
    };
    let other = if Arc::ptr_eq(&owner, &a) {
        b.clone()
    } else {
        a.clone()
    };
    tokio::task::spawn_blocking({
        let owner = owner.clone();
        move || {
            wait("the owner reads the segment", 60, || {
                !owner.segments.lock().unwrap().is_empty()
            })
        }
    })
    .await
    .unwrap();
    let got = owner.segments.lock().unwrap().clone();
    assert_eq!(
        got,
        vec![(
            d.partition,
            SegmentEvent::Segment {
                stream: "cam-1".into(),
                tenant: "platform".into(),
                seq: 3,
                bytes,
                accepted_ms: 42,
            }
        )]
    );
    assert!(other.segments.lock().unwrap().is_empty());
}

//! The async runtime never waits on disk or inference: with one stream's escalation
//! stuck in the outbox's fsync and another stream's frame stuck in a classifier, the
//! served daemon still answers `/readyz` and `GET /v1/streams`.
//!
//! The daemon is built in-process (`Daemon::build_with`) with two injected
//! dependencies: an outbox [`Syncer`] whose `fdatasync` waits at a gate, and a
//! [`FrameModel`] that scores stream `hot` at once (its escalation then reaches the
//! outbox and waits in the fsync) and holds stream `busy`'s frame at a gate, as a slow
//! inference would, with the stream's detection lock held. Frames come from real
//! pushed video through FFmpeg and each stream's consumer thread, as in production.
//! Every wait has a generous deadline; nothing is timed.

use std::fs::File;
use std::net::SocketAddr;
use std::sync::{Arc, Condvar, Mutex};
use std::time::{Duration, Instant};

use firebreak::config::ServiceConfig;
use firebreak::daemon::{Daemon, Dependencies};
use firebreak::engine::FrameModel;
use firebreak_delivery::Syncer;
use firebreak_media::ingest::SampledFrame;
use firebreak_policy::policy::ClassifierScore;
use firebreak_testkit::daemon::{INGEST, READ, tokens_config};
use firebreak_testkit::media::encode;
use serde_json::Value;

/// How long any answer or awaited state may take: generous, never a measurement.
const DEADLINE: Duration = Duration::from_secs(10);

/// Callers wait here until the gate opens; the test sees when someone is waiting.
#[derive(Debug, Default)]
struct Gate {
    /// (open, callers that arrived)
    state: Mutex<(bool, usize)>,
    changed: Condvar,
}

impl Gate {
    fn pass(&self) {
        let mut s = self.state.lock().unwrap();
        s.1 += 1;
        self.changed.notify_all();
        while !s.0 {
            s = self.changed.wait(s).unwrap();
        }
    }

    fn open(&self) {
        self.state.lock().unwrap().0 = true;
        self.changed.notify_all();
    }

    /// Whether a caller arrived within `timeout`.
    fn reached(&self, timeout: Duration) -> bool {
        let s = self.state.lock().unwrap();
        let (s, _) = self
            .changed
            .wait_timeout_while(s, timeout, |s| s.1 == 0)
            .unwrap();
        s.1 > 0
    }
}

/// Opens the gates when the test ends, passed or failed, so no thread stays stuck.
struct OpenOnDrop(Vec<Arc<Gate>>);

impl Drop for OpenOnDrop {
    fn drop(&mut self) {
        for g in &self.0 {
            g.open();
        }
    }
}

/// Every record's `fdatasync` waits at the gate first.
#[derive(Debug)]
struct HeldSync(Arc<Gate>);

impl Syncer for HeldSync {
    fn sync_data(&self, file: &File) -> std::io::Result<()> {
        self.0.pass();
        file.sync_data()
    }
}

/// Scores every frame of `hot` 1.0 in category `alarm`; holds `busy`'s frames at the
/// gate, then scores nothing.
#[derive(Debug)]
struct ScriptedModel(Arc<Gate>);

impl FrameModel for ScriptedModel {
    fn classify(&self, frame: &SampledFrame) -> Vec<ClassifierScore> {
        match &*frame.stream_id {
            "hot" => vec![ClassifierScore {
                category: "alarm".into(),
                score: 1.0,
                model: "scripted".into(),
                model_version: "1".into(),
            }],
            "busy" => {
                self.0.pass();
                Vec::new()
            }
            _ => Vec::new(),
        }
    }
}

/// One frame scoring at least 0.5 in `alarm` escalates to `crisis`.
const POLICY: &str = r#"
version = "runtime-test"
tiers = ["crisis"]

[[rule]]
name = "alarm"
kind = "classifier"
category = "alarm"
enter = 0.5
exit = 0.4
tier = "crisis"
"#;

fn get(agent: &ureq::Agent, url: &str, token: Option<&str>) -> (u16, Value) {
    let mut req = agent.get(url);
    if let Some(t) = token {
        req = req.set("authorization", &format!("Bearer {t}"));
    }
    match req.call() {
        Ok(r) => (r.status(), r.into_json().unwrap()),
        Err(ureq::Error::Status(code, r)) => (code, r.into_json().unwrap_or(Value::Null)),
        Err(e) => panic!("GET {url}: no answer within {DEADLINE:?}: {e}"),
    }
}

fn push(agent: &ureq::Agent, base: &str, id: &str, segment: &[u8]) {
    let r = agent
        .put(&format!("{base}/v1/streams/{id}/segments/0"))
        .set("authorization", &format!("Bearer {INGEST}"))
        .send_bytes(segment)
        .unwrap_or_else(|e| panic!("pushing to {id}: {e}"));
    assert_eq!(r.status(), 200);
}

#[test]
fn readyz_and_the_stream_list_answer_while_an_outbox_fsync_and_an_inference_hang() {
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("data");
    let policy = dir.path().join("policy.toml");
    std::fs::write(&policy, POLICY).unwrap();
    let text = format!(
        "data_dir = \"{}\"\nworker_id = \"runtime-test\"\n{}[policy]\nfile = \"{}\"\n",
        data.display(),
        tokens_config(),
        policy.display()
    );
    let config = ServiceConfig::parse(&text, dir.path()).unwrap();
    let fsync = Arc::new(Gate::default());
    let inference = Arc::new(Gate::default());
    let _release = OpenOnDrop(vec![fsync.clone(), inference.clone()]);
    let daemon = Daemon::build_with(
        config,
        Dependencies {
            outbox_sync: Arc::new(HeldSync(fsync.clone())),
            frame_models: vec![Arc::new(ScriptedModel(inference.clone()))],
            ..Dependencies::default()
        },
    )
    .unwrap();

    // Served on a runtime of its own, as `firebreak run` serves it.
    let (addr_tx, addr_rx) = std::sync::mpsc::channel::<SocketAddr>();
    let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
    let server = std::thread::spawn(move || {
        let rt = tokio::runtime::Builder::new_multi_thread()
            .enable_all()
            .build()
            .unwrap();
        rt.block_on(async move {
            let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
            addr_tx.send(listener.local_addr().unwrap()).unwrap();
            daemon
                .serve(listener, async move {
                    let _ = stopped.await;
                })
                .await
                .unwrap();
        });
    });
    let base = format!("http://{}", addr_rx.recv_timeout(DEADLINE).unwrap());
    let agent = ureq::AgentBuilder::new().timeout(DEADLINE).build();

    let clip = dir.path().join("clip.ts");
    encode("testsrc2=size=320x180:rate=25", 2, 25, &clip);
    let segment = std::fs::read(&clip).unwrap();

    // `hot` escalates on its first frame; the event waits in the outbox's fsync.
    push(&agent, &base, "hot", &segment);
    assert!(
        fsync.reached(Duration::from_secs(60)),
        "no escalation reached the outbox's fsync"
    );
    // `busy`'s first frame waits inside the classifier, its detection lock held.
    push(&agent, &base, "busy", &segment);
    assert!(
        inference.reached(Duration::from_secs(60)),
        "no frame of `busy` reached the classifier"
    );

    // Ready, and nothing accepted yet: an event counts as accepted once its fsync
    // has returned.
    let (status, ready) = get(&agent, &format!("{base}/readyz"), None);
    assert_eq!(status, 200, "{ready}");
    assert_eq!(ready["ready"], true, "{ready}");
    assert_eq!(ready["checks"]["outbox_depth"], 0, "{ready}");

    // Both streams listed with their tiers: `hot` escalated before its event reached
    // the outbox, `busy` has not finished a frame.
    let (status, list) = get(&agent, &format!("{base}/v1/streams"), Some(READ));
    assert_eq!(status, 200, "{list}");
    let tiers: Vec<(&str, &str)> = list["streams"]
        .as_array()
        .unwrap()
        .iter()
        .map(|s| (s["id"].as_str().unwrap(), s["tier"].as_str().unwrap()))
        .collect();
    assert_eq!(tiers, [("busy", "none"), ("hot", "crisis")], "{list}");

    // Released, the held event is accepted and delivered: nothing was lost.
    fsync.open();
    inference.open();
    let events = data.join("events.jsonl");
    let started = Instant::now();
    let delivered = loop {
        let text = std::fs::read_to_string(&events).unwrap_or_default();
        let subjects: Vec<String> = text
            .lines()
            .map(|l| {
                let v: Value = serde_json::from_str(l).unwrap();
                v["subject"].as_str().unwrap_or_default().to_owned()
            })
            .collect();
        if subjects.iter().any(|s| s == "hot") || started.elapsed() > Duration::from_secs(30) {
            break subjects;
        }
        std::thread::sleep(Duration::from_millis(50));
    };
    assert!(
        delivered.iter().all(|s| s == "hot") && !delivered.is_empty(),
        "{delivered:?}"
    );

    stop.send(()).unwrap();
    server.join().unwrap();
}

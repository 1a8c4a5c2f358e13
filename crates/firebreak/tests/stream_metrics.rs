//! The streams' metrics are read when `/metrics` is scraped: a stream that ended loses
//! its last-frame age, once forgotten (evicted to make room) it is no longer counted
//! by state, and the dropped-frame counters, which include its drops, do not go down.
//! (`firebreak_stream_tier` is the engine's, removed when the stream ends: the churn
//! test checks that no series names an ended stream.) In-process: the real router,
//! ingest and collector of a daemon built with `Daemon::build_with`; the stream's
//! frames are dropped deterministically by holding its detectors (an injected
//! `FrameModel`).

use std::sync::{Arc, Condvar, Mutex};
use std::time::{Duration, Instant};

use axum::body::Body;
use axum::http::Request;
use firebreak::config::ServiceConfig;
use firebreak::daemon::{Daemon, Dependencies};
use firebreak::engine::FrameModel;
use firebreak_media::ingest::SampledFrame;
use firebreak_policy::policy::ClassifierScore;
use firebreak_testkit::daemon::{INGEST, READ, tokens_config};
use firebreak_testkit::media::encode;
use tower::ServiceExt;

async fn call(d: &Daemon, method: &str, path: &str, token: &str, body: Vec<u8>) -> (u16, String) {
    let req = Request::builder()
        .method(method)
        .uri(path)
        .header("authorization", format!("Bearer {token}"))
        .body(Body::from(body))
        .unwrap();
    let resp = d.router().oneshot(req).await.unwrap();
    let status = resp.status().as_u16();
    let bytes = axum::body::to_bytes(resp.into_body(), 16 << 20)
        .await
        .unwrap();
    (status, String::from_utf8_lossy(&bytes).into_owned())
}

async fn scrape(d: &Daemon) -> String {
    let (status, text) = call(d, "GET", "/metrics", READ, Vec::new()).await;
    assert_eq!(status, 200, "{text}");
    text
}

/// The value of the series `series` (name and labels exactly), if exported.
fn value(text: &str, series: &str) -> Option<f64> {
    text.lines().find_map(|l| {
        l.strip_prefix(series)
            .and_then(|rest| rest.strip_prefix(' '))
            .map(|v| v.parse().unwrap())
    })
}

fn dropped(text: &str, reason: &str) -> f64 {
    value(
        text,
        &format!("firebreak_frames_dropped_total{{reason=\"{reason}\"}}"),
    )
    .unwrap_or_else(|| panic!("no {reason} counter in\n{text}"))
}

/// Polls the exposition until `done` holds (generous deadline).
async fn scrape_until(d: &Daemon, what: &str, done: impl Fn(&str) -> bool) -> String {
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        let text = scrape(d).await;
        if done(&text) {
            return text;
        }
        assert!(
            Instant::now() < deadline,
            "timed out waiting for {what}:\n{text}"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// Holds the detectors on the first frame of stream `first` until opened, so its
/// decoder fills the frame queue and drops frames (`queue_full`).
#[derive(Debug, Default)]
struct Gate {
    /// (open, frames that arrived)
    state: Mutex<(bool, usize)>,
    changed: Condvar,
}

impl Gate {
    fn open(&self) {
        self.state.lock().unwrap().0 = true;
        self.changed.notify_all();
    }

    fn reached(&self) -> bool {
        self.state.lock().unwrap().1 > 0
    }
}

impl FrameModel for Gate {
    fn classify(&self, frame: &SampledFrame) -> Vec<ClassifierScore> {
        if &*frame.stream_id == "first" {
            let mut s = self.state.lock().unwrap();
            s.1 += 1;
            while !s.0 {
                s = self.changed.wait(s).unwrap();
            }
        }
        Vec::new()
    }
}

/// Opens the gate when the test ends, passed or failed.
struct OpenOnDrop(Arc<Gate>);

impl Drop for OpenOnDrop {
    fn drop(&mut self) {
        self.0.open();
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_ended_and_forgotten_stream_leaves_the_exposition_and_its_drops_stay_counted() {
    let dir = tempfile::tempdir().unwrap();
    let text = format!(
        "data_dir = \"{}\"\n{}[server]\nmax_streams = 1\n[ingest]\nsampling = \"every\"\n",
        dir.path().join("data").display(),
        tokens_config(),
    );
    let gate = Arc::new(Gate::default());
    let _open = OpenOnDrop(gate.clone());
    let daemon = Daemon::build_with(
        ServiceConfig::parse(&text, dir.path()).unwrap(),
        Dependencies {
            frame_models: vec![gate.clone()],
            ..Dependencies::default()
        },
    )
    .unwrap();
    let clip = dir.path().join("clip.ts");
    encode("testsrc2=size=320x240:rate=25", 4, 25, &clip);
    let clip = std::fs::read(&clip).unwrap();

    // A pushed stream, running: its last-frame age is exported.
    let (status, body) = call(&daemon, "PUT", "/v1/streams/first/segments/0", INGEST, clip).await;
    assert_eq!(status, 200, "{body}");
    let age = "firebreak_stream_last_frame_age_seconds{stream=\"first\"}";
    scrape_until(&daemon, "a frame of the running stream", |t| {
        value(t, age).is_some() && gate.reached()
    })
    .await;

    // Ended (its detectors still held): no age, counted as ended, its drops counted.
    let (status, body) = call(&daemon, "POST", "/v1/streams/first/end", INGEST, vec![]).await;
    assert_eq!(status, 200, "{body}");
    let ended = scrape_until(&daemon, "the stream to end", |t| {
        value(t, "firebreak_streams{state=\"ended\"}") == Some(1.0)
    })
    .await;
    assert_eq!(value(&ended, age), None, "{ended}");
    let reasons = ["queue_full", "decode_error", "degraded"];
    let before: Vec<f64> = reasons.iter().map(|r| dropped(&ended, r)).collect();
    assert!(
        before[0] > 0.0,
        "100 frames behind held detectors, none dropped:\n{ended}"
    );
    gate.open();

    // A second stream (one byte: no frame to drop) takes the only slot: the first is
    // forgotten, and its drops stay counted.
    let (status, body) = call(
        &daemon,
        "PUT",
        "/v1/streams/second/segments/0",
        INGEST,
        vec![0x47],
    )
    .await;
    assert_eq!(status, 200, "{body}");
    let after = scrape(&daemon).await;
    assert!(!after.contains(age), "{after}");
    assert_eq!(
        value(&after, "firebreak_streams{state=\"ended\"}"),
        Some(0.0),
        "{after}"
    );
    assert_eq!(dropped(&after, "queue_full"), before[0], "{after}");
    assert_eq!(dropped(&after, "degraded"), before[2], "{after}");
    assert!(dropped(&after, "decode_error") >= before[1], "{after}");
}

//! The daemon built in-process (`Daemon::build_with_clock`) on a manual clock: incident
//! open / acknowledge / resolve through the real router, cool-down, a stalled stream,
//! and a policy swap, with exact times and no sleeping.
//!
//! Frames are conformance images (`../shared/conformance/pdq`); the bank holds the
//! reference hash of one of them from Meta's C++ (`expected.csv`), so a match does not
//! depend on hashes computed by the code under test.

use std::path::PathBuf;
use std::sync::Arc;

use axum::body::Body;
use axum::http::{Request, StatusCode};
use firebreak::clock::{Clock, ManualClock, TokioClock};
use firebreak::config::ServiceConfig;
use firebreak::daemon::Daemon;
use firebreak::engine::Escalation;
use firebreak_hashing::Hash256;
use firebreak_hashing::decode::decode_file;
use firebreak_matching::bank::{Bank, ImportPolicy};
use firebreak_matching::lists::{Record, Signal};
use firebreak_matching::store::BankStore;
use firebreak_media::ingest::{Pixels, SampledFrame};
use firebreak_policy::policy::StreamEvent;
use firebreak_testkit::daemon::{ADMIN, OPERATOR, READ, tokens_config};
use serde_json::Value;
use tower::ServiceExt;

const T0: u64 = 1_800_000_000_000;

fn conformance() -> PathBuf {
    firebreak_testkit::repo_root().join("../shared/conformance/pdq")
}

/// The reference hash of a conformance image (Meta's C++, `expected.csv`).
fn reference_hash(file: &str) -> Hash256 {
    let text = std::fs::read_to_string(conformance().join("expected.csv")).unwrap();
    let line = text
        .lines()
        .find(|l| l.starts_with(&format!("{file},")))
        .unwrap_or_else(|| panic!("{file} not in expected.csv"));
    line.split(',').nth(1).unwrap().parse().unwrap()
}

struct Harness {
    daemon: Daemon,
    clock: Arc<ManualClock>,
    _dir: tempfile::TempDir,
    known: Image,
    other: Image,
}

#[derive(Clone)]
struct Image {
    width: u32,
    height: u32,
    rgb: Arc<[u8]>,
}

fn image(file: &str) -> Image {
    let img = decode_file(&conformance().join("images").join(file)).unwrap();
    assert_eq!(img.format, firebreak_hashing::PixelFormat::Rgb8, "{file}");
    Image {
        width: img.width as u32,
        height: img.height as u32,
        rgb: img.pixels.into(),
    }
}

/// A daemon whose bank `crisis` holds the bridge image's reference hash, with the
/// built-in policy (or `policy`), and a manual clock at [`T0`].
fn harness(policy: Option<&str>) -> Harness {
    let clock = ManualClock::at(T0);
    harness_on(policy, clock.clone(), clock)
}

/// [`harness`] with wall time from `clock` (`manual` is only for `Harness::clock`).
fn harness_on(policy: Option<&str>, manual: Arc<ManualClock>, clock: Arc<dyn Clock>) -> Harness {
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("data");
    let mut bank = Bank::new("crisis", false);
    let report = bank.import(
        vec![Record {
            line: 1,
            id: Some("bridge".into()),
            signal: Signal::Pdq {
                hash: reference_hash("bridge-1-original.jpg"),
                quality: Some(100),
            },
            labels: vec![],
            delete: false,
        }],
        vec![],
        ImportPolicy::default(),
    );
    assert_eq!(report.added, 1);
    BankStore::new(data.join("banks")).save(&bank).unwrap();
    let mut text = format!(
        "data_dir = \"{}\"\nworker_id = \"engine-test\"\n{}",
        data.display(),
        tokens_config()
    );
    if let Some(p) = policy {
        let path = dir.path().join("policy.toml");
        std::fs::write(&path, p).unwrap();
        text.push_str(&format!("[policy]\nfile = \"{}\"\n", path.display()));
    }
    let config = ServiceConfig::parse(&text, dir.path()).unwrap();
    let daemon = Daemon::build_with_clock(config, clock).unwrap();
    Harness {
        daemon,
        clock: manual,
        _dir: dir,
        known: image("bridge-1-original.jpg"),
        other: image("pen-and-coaster.png"),
    }
}

impl Harness {
    /// A sampled frame of `img` on stream `id` at media time `pts`, sampled now.
    fn frame(&self, id: &str, index: u64, pts: f64, img: &Image) {
        self.frame_at(self.clock.now(), id, index, pts, img);
    }

    /// A sampled frame sampled at wall time `wall_ms`.
    fn frame_at(&self, wall_ms: u64, id: &str, index: u64, pts: f64, img: &Image) {
        self.daemon.engine().on_frame(&SampledFrame {
            stream_id: id.into(),
            index,
            pts,
            wall_ms,
            arrival_ms: None,
            origin_ms: None,
            keyframe: true,
            width: img.width,
            height: img.height,
            pixels: Pixels::Rgb24(img.rgb.clone()),
        });
    }

    fn escalations(&self) -> Vec<Escalation> {
        self.daemon.engine().escalations(None)
    }

    fn only(&self) -> Escalation {
        let all = self.escalations();
        assert_eq!(all.len(), 1, "{all:?}");
        all.into_iter().next().unwrap()
    }

    /// Decisions accepted into the outbox (nothing delivers them here).
    fn accepted(&self) -> usize {
        self.daemon.pipeline().depth()
    }

    async fn call(&self, method: &str, path: &str, token: &str, body: &str) -> (StatusCode, Value) {
        let req = Request::builder()
            .method(method)
            .uri(path)
            .header("authorization", format!("Bearer {token}"))
            .header("content-type", "application/json")
            .body(Body::from(body.to_owned()))
            .unwrap();
        let resp = self.daemon.router().oneshot(req).await.unwrap();
        let status = resp.status();
        let bytes = axum::body::to_bytes(resp.into_body(), 1 << 20)
            .await
            .unwrap();
        (
            status,
            serde_json::from_slice(&bytes).unwrap_or(Value::Null),
        )
    }
}

trait Now {
    fn now(&self) -> u64;
}

impl Now for ManualClock {
    fn now(&self) -> u64 {
        self.now_ms()
    }
}

#[test]
fn unrelated_frames_open_nothing() {
    let h = harness(None);
    for i in 0..4 {
        h.frame("s1", i, i as f64 * 0.5, &h.other);
        h.clock.advance(500);
    }
    assert!(h.escalations().is_empty());
    assert_eq!(h.accepted(), 0);
    assert_eq!(h.daemon.engine().tier("s1"), ("none".to_owned(), 0));
    let timeline = h.daemon.engine().timeline("s1", None).unwrap();
    assert_eq!(timeline.len(), 4);
    assert_eq!(timeline[3].wall_ms, T0 + 1500);
    assert_eq!(timeline[3].score, 0.0);
}

#[tokio::test]
async fn incident_opens_is_acknowledged_and_resolved_over_the_api() {
    let h = harness(None);
    h.frame("s1", 0, 0.0, &h.other);
    h.clock.advance(500);
    h.frame("s1", 1, 0.5, &h.known);
    let e = h.only();
    assert_eq!(e.stream_id, "s1");
    assert_eq!(
        (e.tier.as_str(), e.tier_index, e.state),
        ("crisis", 4, "open")
    );
    assert_eq!(
        (e.opened_ms, e.updated_ms, e.closed_ms),
        (T0 + 500, T0 + 500, None)
    );
    assert!(
        e.rules.contains(&"crisis-bank-match".to_owned()),
        "{:?}",
        e.rules
    );
    assert_eq!(h.accepted(), 1);
    assert_eq!(h.daemon.engine().tier("s1"), ("crisis".to_owned(), 4));

    // The read scope may list but not acknowledge.
    let (status, list) = h.call("GET", "/v1/escalations", READ, "").await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(list["escalations"][0]["id"], e.id.as_str(), "{list}");
    let ack = format!("/v1/escalations/{}/ack", e.id);
    let (status, _) = h.call("POST", &ack, READ, "{}").await;
    assert_eq!(status, StatusCode::FORBIDDEN);
    // The denial is audited off the runtime: wait for it (boundedly) before acting,
    // so the audit log below holds the actions in the order they happened.
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(10);
    while !h
        .daemon
        .engine()
        .audit_entries(None)
        .iter()
        .any(|a| a.action == "auth.denied")
    {
        assert!(
            std::time::Instant::now() < deadline,
            "the refused acknowledgement was not audited"
        );
        tokio::time::sleep(std::time::Duration::from_millis(5)).await;
    }

    h.clock.advance(4_500);
    let (status, v) = h.call("POST", &ack, OPERATOR, r#"{"note":"on it"}"#).await;
    assert_eq!(status, StatusCode::OK, "{v}");
    assert_eq!(v["state"], "acknowledged");
    assert_eq!(v["acknowledged"]["by"], "platform");
    assert_eq!(v["acknowledged"]["at_ms"], T0 + 5_000);
    assert_eq!(v["acknowledged"]["note"], "on it");
    // Answered once its audit entry was in the file.
    let audit = std::fs::read_to_string(h._dir.path().join("data/audit.jsonl")).unwrap();
    let last: Value = serde_json::from_str(audit.lines().last().unwrap()).unwrap();
    assert_eq!(
        (&last["action"], &last["target"]),
        (&Value::from("escalation.ack"), &Value::from(e.id.as_str()))
    );

    h.clock.advance(1_000);
    let resolve = format!("/v1/escalations/{}/resolve", e.id);
    let (status, v) = h.call("POST", &resolve, OPERATOR, "{}").await;
    assert_eq!(status, StatusCode::OK, "{v}");
    assert_eq!(v["state"], "resolved");
    assert_eq!(v["resolved"]["at_ms"], T0 + 6_000);
    assert_eq!(v["acknowledged"]["at_ms"], T0 + 5_000);
    let (status, _) = h.call("POST", &resolve, OPERATOR, "{}").await;
    assert_eq!(status, StatusCode::CONFLICT);
    let (status, _) = h
        .call("POST", "/v1/escalations/nope/ack", OPERATOR, "{}")
        .await;
    assert_eq!(status, StatusCode::NOT_FOUND);

    // Both actions are in the audit log, at the clock's times, after the refused
    // acknowledgement (from an in-process call: no peer address).
    let audit = h.daemon.engine().audit_entries(None);
    let actions: Vec<(&str, u64, &str)> = audit
        .iter()
        .map(|a| (a.action.as_str(), a.at_ms, a.new.as_str().unwrap_or("")))
        .collect();
    assert_eq!(
        actions,
        [
            ("auth.denied", T0 + 500, "scope"),
            ("escalation.ack", T0 + 5_000, "acknowledged"),
            ("escalation.resolve", T0 + 6_000, "resolved")
        ]
    );
    // A resolved incident stays listed for an hour, then drops out of the list.
    h.clock.set(T0 + 6_000 + 3_600_000);
    assert_eq!(h.escalations().len(), 1);
    h.clock.advance(1);
    assert!(h.escalations().is_empty());
}

#[test]
fn a_quiet_stream_cools_down_after_hold_and_cooldown() {
    // Built-in policy: rules hold 30 s without evidence, a tier lowers 60 s after the
    // last change.
    let h = harness(None);
    h.frame("s1", 0, 0.0, &h.known);
    assert_eq!(h.only().tier, "crisis");
    h.clock.set(T0 + 30_000);
    h.daemon.engine().tick();
    h.clock.set(T0 + 59_999);
    h.daemon.engine().tick();
    assert_eq!(h.daemon.engine().tier("s1").0, "crisis");
    assert_eq!(h.only().closed_ms, None);
    assert_eq!(h.accepted(), 1);

    h.clock.set(T0 + 60_000);
    h.daemon.engine().tick();
    assert_eq!(h.daemon.engine().tier("s1"), ("none".to_owned(), 0));
    let e = h.only();
    assert_eq!(e.closed_ms, Some(T0 + 60_000));
    assert_eq!(e.tier, "crisis", "the incident keeps its highest tier");
    assert_eq!(h.accepted(), 2);
    // Ticking again decides nothing more.
    h.clock.advance(120_000);
    h.daemon.engine().tick();
    assert_eq!(h.accepted(), 2);
}

#[test]
fn evidence_within_the_hold_keeps_the_tier() {
    let h = harness(None);
    for i in 0..5u64 {
        h.clock.set(T0 + i * 20_000);
        h.frame("s1", i, i as f64 * 20.0, &h.known);
        h.daemon.engine().tick();
    }
    // 80 s after the first escalation the evidence is 0 s old: still crisis.
    assert_eq!(h.daemon.engine().tier("s1").0, "crisis");
    assert_eq!(h.only().closed_ms, None);
    // The last evidence was at T0 + 80 s: the hold ends at +110 s, and the tier has
    // not changed since T0, so it lowers at the first tick after the hold.
    h.clock.set(T0 + 110_000);
    h.daemon.engine().tick();
    assert_eq!(h.daemon.engine().tier("s1").0, "crisis");
    h.clock.set(T0 + 110_001);
    h.daemon.engine().tick();
    assert_eq!(h.daemon.engine().tier("s1").0, "none");
    assert_eq!(h.only().closed_ms, Some(T0 + 110_001));
}

#[test]
fn a_stall_event_re_evaluates_at_once() {
    let h = harness(None);
    h.frame("s1", 0, 0.0, &h.known);
    // A stall inside the hold changes nothing.
    h.clock.set(T0 + 10_000);
    h.daemon
        .engine()
        .on_stream_event("s1", StreamEvent::Stalled);
    assert_eq!(h.daemon.engine().tier("s1").0, "crisis");
    assert_eq!(h.accepted(), 1);
    // Reported after the hold and the cool-down, the stall lowers the tier without
    // waiting for a tick, at the stall's time.
    h.clock.set(T0 + 61_000);
    h.daemon
        .engine()
        .on_stream_event("s1", StreamEvent::Stalled);
    assert_eq!(h.daemon.engine().tier("s1").0, "none");
    assert_eq!(h.only().closed_ms, Some(T0 + 61_000));
    assert_eq!(h.accepted(), 2);
}

#[test]
fn an_ended_stream_closes_its_incident_and_its_id_starts_fresh() {
    let h = harness(None);
    h.frame("s1", 0, 0.0, &h.known);
    let first = h.only().id;
    h.clock.advance(2_000);
    h.daemon.engine().on_stream_event("s1", StreamEvent::Ended);
    let e = h.only();
    assert_eq!(e.closed_ms, Some(T0 + 2_000));
    assert_eq!(h.accepted(), 2);
    // Ending twice decides nothing more.
    h.daemon.engine().on_stream_event("s1", StreamEvent::Ended);
    assert_eq!(h.accepted(), 2);
    // The id reused: a new stream, a new incident.
    h.clock.advance(1_000);
    h.frame("s1", 0, 0.0, &h.known);
    let all = h.escalations();
    assert_eq!(all.len(), 2);
    assert_eq!(all[0].opened_ms, T0 + 3_000);
    assert_ne!(all[0].id, first);
}

#[tokio::test]
async fn a_policy_swap_keeps_the_incident_and_applies_the_new_cooldown() {
    let h = harness(None);
    h.frame("s1", 0, 0.0, &h.known);
    let incident = h.only().id;

    // An operator shortens the cool-down through the API: 10 s instead of 60 s.
    h.clock.set(T0 + 1_000);
    let (status, current) = h.call("GET", "/v1/policy", READ, "").await;
    assert_eq!(status, StatusCode::OK);
    let toml_text = current["toml"]
        .as_str()
        .unwrap()
        .replace("cooldown_secs = 60.0", "cooldown_secs = 10.0");
    assert!(toml_text.contains("cooldown_secs = 10.0"), "{toml_text}");
    let (status, _) = h.call("PUT", "/v1/policy", OPERATOR, &toml_text).await;
    assert_eq!(
        status,
        StatusCode::FORBIDDEN,
        "policy changes need the admin scope"
    );
    let (status, v) = h.call("PUT", "/v1/policy", ADMIN, &toml_text).await;
    assert_eq!(status, StatusCode::OK, "{v}");
    let version = v["version"].as_str().unwrap().to_owned();

    // The stream kept its tier and its incident through the swap.
    assert_eq!(h.daemon.engine().tier("s1").0, "crisis");
    assert_eq!(h.accepted(), 1);
    // The hold (30 s) still applies; then the new cool-down has long passed.
    h.clock.set(T0 + 30_000);
    h.daemon.engine().tick();
    assert_eq!(h.daemon.engine().tier("s1").0, "crisis");
    h.clock.set(T0 + 30_001);
    h.daemon.engine().tick();
    assert_eq!(h.daemon.engine().tier("s1").0, "none");
    let e = h.only();
    assert_eq!(e.id, incident);
    assert_eq!(e.closed_ms, Some(T0 + 30_001));
    assert_eq!(e.policy_version, version);
    let swap = h
        .daemon
        .engine()
        .audit_entries(None)
        .into_iter()
        .find(|a| a.action == "policy.update")
        .expect("the swap is audit-logged");
    assert_eq!(swap.at_ms, T0 + 1_000);
    assert_eq!(swap.who.as_deref(), Some("ops"));
    assert_eq!(swap.new["version"], version.as_str());
}

/// The served daemon cools a quiet stream down by itself: its once-a-second loop ticks
/// the engine on a paused tokio clock (61 virtual seconds, no real waiting), and both
/// decisions reach the JSONL sink through the outbox.
#[tokio::test(start_paused = true)]
async fn the_served_daemon_cools_down_on_its_own_ticks_and_delivers() {
    let clock = TokioClock::starting_at(T0);
    let h = harness_on(None, ManualClock::at(0), clock.clone());
    let events = h._dir.path().join("data/events.jsonl");
    h.frame_at(clock.now_ms(), "s1", 0, 0.0, &h.known);
    assert_eq!(h.only().tier, "crisis");
    let engine = h.daemon.engine().clone();

    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
    let Harness { daemon, _dir, .. } = h;
    let served = tokio::spawn(daemon.serve(listener, async move {
        let _ = stopped.await;
    }));
    tokio::time::sleep(std::time::Duration::from_secs(59)).await;
    assert_eq!(
        engine.tier("s1").0,
        "crisis",
        "cooled down before the cool-down"
    );
    tokio::time::sleep(std::time::Duration::from_secs(2)).await;
    assert_eq!(engine.tier("s1").0, "none");
    let closed = engine.escalations(None)[0].closed_ms.unwrap();
    // The first tick at or after T0 + 60 s (ticks run on blocking threads, so the
    // paused clock may have moved on by up to a tick when it reads the time).
    assert!((T0 + 60_000..=T0 + 61_000).contains(&closed), "{closed}");

    stop.send(()).unwrap();
    served.await.unwrap().unwrap();
    let text = std::fs::read_to_string(&events).unwrap();
    let kinds: Vec<(String, String)> = text
        .lines()
        .map(|l| {
            let v: Value = serde_json::from_str(l).unwrap();
            (
                v["data"]["kind"].as_str().unwrap().to_owned(),
                v["data"]["tier"].as_str().unwrap().to_owned(),
            )
        })
        .collect();
    assert_eq!(
        kinds,
        [
            ("escalated".to_owned(), "crisis".to_owned()),
            ("deescalated".to_owned(), "none".to_owned())
        ]
    );
    drop(_dir);
}

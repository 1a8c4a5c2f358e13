//! Nothing lost, nothing stuck, on the daemon built in-process (`Daemon::build_with`)
//! and served as `firebreak run` serves it:
//!
//! - the event log cannot be written (its path is `/dev/full`): delivery pauses with
//!   an alarm instead of dead-lettering, the outbox (one event at most here) fills,
//!   pushed segments are answered 503 with `Retry-After` and readiness turns false;
//!   a decision made meanwhile waits for room instead of being dropped; after the
//!   operator fixes the log and reloads, everything is delivered, in order;
//! - the outbox's disk is full (an injected `Syncer` failing with ENOSPC): readiness
//!   turns false with a disk alarm and segments are refused until a write succeeds;
//!   the decision is written then, not lost; new pulled streams are refused too;
//! - the incident journal's and audit log's disk is full: no incident is lost (the
//!   journal catches up once there is space) and no unaudited change is applied;
//! - incidents: new evidence reopens a resolved incident (audited, journaled, shown by
//!   the API and the live feed); the store is bounded (`[incidents] max_kept`, oldest
//!   resolved dropped first) and the list paginated.
//!
//! A scripted frame model escalates streams named `hot…` to `watch` on their first
//! frame, and to `crisis` once the test raises its `severe` flag. Every wait has a
//! generous deadline; nothing is timed.

use std::fs::File;
use std::net::SocketAddr;
use std::path::Path;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use firebreak::config::ServiceConfig;
use firebreak::daemon::{Daemon, Dependencies};
use firebreak::engine::FrameModel;
use firebreak_delivery::Syncer;
use firebreak_media::ingest::SampledFrame;
use firebreak_policy::policy::ClassifierScore;
use firebreak_testkit::daemon::{ADMIN, INGEST, READ, tokens_config};
use firebreak_testkit::media::encode;
use serde_json::Value;

/// Scores every frame of a stream named `hot…` 1.0 in category `alarm`, and in
/// `severe` too while the flag is up; nothing else.
#[derive(Debug, Default)]
struct HotModel {
    severe: Arc<AtomicBool>,
}

impl FrameModel for HotModel {
    fn classify(&self, frame: &SampledFrame) -> Vec<ClassifierScore> {
        if !frame.stream_id.starts_with("hot") {
            return Vec::new();
        }
        let score = |category: &str| ClassifierScore {
            category: category.into(),
            score: 1.0,
            model: "scripted".into(),
            model_version: "1".into(),
        };
        let mut out = vec![score("alarm")];
        if self.severe.load(Ordering::Acquire) {
            out.push(score("severe"));
        }
        out
    }
}

const POLICY: &str = r#"
version = "nothing-lost-test"
tiers = ["watch", "crisis"]

[[rule]]
name = "alarm"
kind = "classifier"
category = "alarm"
enter = 0.5
exit = 0.4
tier = "watch"

[[rule]]
name = "severe"
kind = "classifier"
category = "severe"
enter = 0.5
exit = 0.4
tier = "crisis"
"#;

/// A served in-process daemon; stopped when dropped.
struct Served {
    base: String,
    agent: ureq::Agent,
    stop: Option<tokio::sync::oneshot::Sender<()>>,
    thread: Option<std::thread::JoinHandle<()>>,
}

impl Drop for Served {
    fn drop(&mut self) {
        if let Some(s) = self.stop.take() {
            let _ = s.send(());
        }
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

fn serve(dir: &Path, extra: &str, deps: Dependencies) -> Served {
    serve_with(dir, extra, deps, HotModel::default())
}

fn serve_with(dir: &Path, extra: &str, deps: Dependencies, model: HotModel) -> Served {
    let policy = dir.join("policy.toml");
    std::fs::write(&policy, POLICY).unwrap();
    let text = format!(
        "data_dir = \"{}\"\nworker_id = \"nothing-lost-test\"\n{}[policy]\nfile = \"{}\"\n{extra}",
        dir.join("data").display(),
        tokens_config(),
        policy.display()
    );
    let config = ServiceConfig::parse(&text, dir).unwrap();
    let daemon = Daemon::build_with(
        config,
        Dependencies {
            frame_models: vec![Arc::new(model)],
            ..deps
        },
    )
    .unwrap();
    let (addr_tx, addr_rx) = std::sync::mpsc::channel::<SocketAddr>();
    let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
    let thread = std::thread::spawn(move || {
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
    let addr = addr_rx.recv_timeout(Duration::from_secs(30)).unwrap();
    Served {
        base: format!("http://{addr}"),
        agent: ureq::AgentBuilder::new()
            .timeout(Duration::from_secs(30))
            .build(),
        stop: Some(stop),
        thread: Some(thread),
    }
}

impl Served {
    /// (status, Retry-After, JSON body) of a request.
    fn call(
        &self,
        method: &str,
        path: &str,
        token: Option<&str>,
        body: &[u8],
    ) -> (u16, Option<String>, Value) {
        let mut r = self.agent.request(method, &format!("{}{path}", self.base));
        if let Some(t) = token {
            r = r.set("authorization", &format!("Bearer {t}"));
        }
        let r = match r.send_bytes(body) {
            Ok(r) | Err(ureq::Error::Status(_, r)) => r,
            Err(e) => panic!("{method} {path}: {e}"),
        };
        let status = r.status();
        let retry = r.header("retry-after").map(str::to_owned);
        let text = r.into_string().unwrap_or_default();
        (
            status,
            retry,
            serde_json::from_str(&text).unwrap_or(Value::Null),
        )
    }

    fn readyz(&self) -> (u16, Value) {
        let (s, _, v) = self.call("GET", "/readyz", None, b"");
        (s, v)
    }

    fn metric(&self, name: &str) -> f64 {
        let text = self
            .agent
            .get(&format!("{}/metrics", self.base))
            .set("authorization", &format!("Bearer {READ}"))
            .call()
            .unwrap()
            .into_string()
            .unwrap();
        text.lines()
            .find_map(|l| l.strip_prefix(&format!("{name} ")))
            .map_or(0.0, |v| v.trim().parse().unwrap())
    }
}

/// Polls `f` until it returns `Some` (generous deadline).
fn wait<T>(what: &str, mut f: impl FnMut() -> Option<T>) -> T {
    let started = Instant::now();
    loop {
        if let Some(v) = f() {
            return v;
        }
        assert!(
            started.elapsed() < Duration::from_secs(90),
            "timed out waiting for {what}"
        );
        std::thread::sleep(Duration::from_millis(50));
    }
}

fn alarm_kinds(ready: &Value) -> Vec<String> {
    ready["checks"]["alarms"]
        .as_array()
        .unwrap()
        .iter()
        .map(|a| a["kind"].as_str().unwrap().to_owned())
        .collect()
}

fn clip(dir: &Path) -> Vec<u8> {
    let clip = dir.join("clip.ts");
    encode("testsrc2=size=320x180:rate=25", 2, 25, &clip);
    std::fs::read(&clip).unwrap()
}

/// The events in the JSONL log: (kind, stream).
fn logged(path: &Path) -> Vec<(String, String)> {
    std::fs::read_to_string(path)
        .unwrap_or_default()
        .lines()
        .map(|l| {
            let v: Value = serde_json::from_str(l).unwrap();
            (
                v["data"]["kind"].as_str().unwrap().to_owned(),
                v["subject"].as_str().unwrap().to_owned(),
            )
        })
        .collect()
}

#[test]
fn a_full_outbox_holds_back_ingest_and_no_decision_is_dropped() {
    let dir = tempfile::tempdir().unwrap();
    let log = dir.path().join("events.jsonl");
    std::os::unix::fs::symlink("/dev/full", &log).unwrap();
    let d = serve(
        dir.path(),
        &format!(
            "[sink]\nkind = \"jsonl\"\npath = \"{}\"\n[outbox]\nmax_records = 1\n",
            log.display()
        ),
        Dependencies::default(),
    );
    let segment = clip(dir.path());
    let (status, _, body) = d.call("PUT", "/v1/streams/hot/segments/0", Some(INGEST), &segment);
    assert_eq!(status, 200, "{body}");

    // The escalation is in the outbox and cannot be delivered: delivery pauses, and
    // the outbox (one event at most) is above its high-water mark.
    let ready = wait("readiness to turn false with both alarms", || {
        let (status, v) = d.readyz();
        let kinds = alarm_kinds(&v);
        (status == 503
            && kinds.contains(&"delivery_paused".to_owned())
            && kinds.contains(&"outbox_full".to_owned()))
        .then_some(v)
    });
    assert_eq!(ready["ready"], false, "{ready}");
    assert_eq!(ready["checks"]["outbox_depth"], 1, "{ready}");
    assert_eq!(d.metric("firebreak_delivery_paused"), 1.0);
    assert_eq!(d.metric("firebreak_outbox_pressure"), 1.0);

    // Ingest is held back: a new stream's segment is refused with Retry-After, and
    // the stream was not created.
    let (status, retry, body) =
        d.call("PUT", "/v1/streams/cold/segments/0", Some(INGEST), &segment);
    assert_eq!(status, 503, "{body}");
    assert_eq!(retry.as_deref(), Some("5"));
    assert_eq!(d.call("GET", "/v1/streams/cold", Some(READ), b"").0, 404);
    // So is a new pulled stream.
    let (status, retry, body) = d.call("POST", "/v1/streams", Some(INGEST), PULLED);
    assert_eq!((status, retry.as_deref()), (503, Some("5")), "{body}");
    assert_eq!(d.call("GET", "/v1/streams/pulled", Some(READ), b"").0, 404);

    // The stream ends during its incident: that decision finds the outbox full and
    // waits for room (counted), rather than being dropped.
    assert_eq!(
        d.call("POST", "/v1/streams/hot/end", Some(INGEST), b"").0,
        200
    );
    wait("the ended decision to meet the full outbox", || {
        (d.metric("firebreak_outbox_full_total") >= 1.0).then_some(())
    });

    // The operator fixes the log and reloads (what SIGHUP does): delivery resumes,
    // the waiting decision is written, everything arrives, nothing dead-lettered.
    std::fs::remove_file(&log).unwrap();
    File::create(&log).unwrap();
    let (status, _, body) = d.call("POST", "/v1/reload", Some(ADMIN), b"");
    assert_eq!(status, 200, "{body}");
    let events = wait("both decisions delivered", || {
        let got = logged(&log);
        got.iter().any(|(k, _)| k == "ended").then_some(got)
    });
    assert_eq!(
        events.first().map(|(k, s)| (k.as_str(), s.as_str())),
        Some(("escalated", "hot"))
    );
    assert_eq!(events.last().map(|(k, _)| k.as_str()), Some("ended"));
    let (status, ready) = wait("readiness back", || {
        let (s, v) = d.readyz();
        (s == 200).then_some((s, v))
    });
    assert_eq!(status, 200);
    assert_eq!(ready["checks"]["alarms"], serde_json::json!([]), "{ready}");
    assert_eq!(d.metric("firebreak_escalation_accept_errors_total"), 0.0);
    assert_eq!(d.metric("firebreak_delivery_dead_lettered_total"), 0.0);
    assert!(!dir.path().join("data/outbox/dead-letter.jsonl").exists());
    // Ingest is taken again.
    let (status, _, body) = d.call("PUT", "/v1/streams/cold/segments/0", Some(INGEST), &segment);
    assert_eq!(status, 200, "{body}");
}

/// A pulled stream's registration (refused before its source is looked at).
const PULLED: &[u8] = br#"{"id":"pulled","url":"rtmp://127.0.0.1:9/live/x"}"#;

/// Every `fdatasync` and `fsync` fails with ENOSPC while armed.
#[derive(Debug, Default)]
struct FullDisk(AtomicBool);

impl FullDisk {
    fn space(&self) -> std::io::Result<()> {
        if self.0.load(Ordering::Acquire) {
            return Err(std::io::Error::from(std::io::ErrorKind::StorageFull));
        }
        Ok(())
    }
}

impl Syncer for FullDisk {
    fn sync_data(&self, file: &File) -> std::io::Result<()> {
        self.space()?;
        file.sync_data()
    }

    fn sync_all(&self, file: &File) -> std::io::Result<()> {
        self.space()?;
        file.sync_all()
    }
}

/// Pushes the `hot` stream's clip (it escalates at once) and waits for readiness to
/// turn false with a disk alarm; returns the clip and the alarm's detail.
fn push_until_disk_alarm(d: &Served, dir: &Path) -> (Vec<u8>, String) {
    let segment = clip(dir);
    let (status, _, body) = d.call("PUT", "/v1/streams/hot/segments/0", Some(INGEST), &segment);
    assert_eq!(status, 200, "{body}");
    let ready = wait("readiness to turn false with a disk alarm", || {
        let (status, v) = d.readyz();
        (status == 503 && alarm_kinds(&v).contains(&"disk".to_owned())).then_some(v)
    });
    let detail = ready["checks"]["alarms"][0]["detail"].as_str().unwrap();
    (segment, detail.to_owned())
}

/// Waits until the JSONL log at `log` holds the `hot` stream's escalation.
fn wait_hot_escalation_logged(log: &Path) {
    wait("the escalation delivered", || {
        logged(log)
            .iter()
            .any(|(k, s)| k == "escalated" && s == "hot")
            .then_some(())
    });
}

#[test]
fn a_full_disk_turns_readiness_false_and_the_decision_is_written_once_it_clears() {
    let dir = tempfile::tempdir().unwrap();
    let disk = Arc::new(FullDisk(AtomicBool::new(true)));
    let d = serve(
        dir.path(),
        "",
        Dependencies {
            outbox_sync: disk.clone(),
            ..Dependencies::default()
        },
    );
    assert_eq!(d.readyz().0, 200);
    let (segment, detail) = push_until_disk_alarm(&d, dir.path());
    assert!(detail.contains("outbox"), "{detail}");
    assert!(d.metric("firebreak_outbox_write_errors_total") >= 1.0);
    let (status, retry, body) =
        d.call("PUT", "/v1/streams/cold/segments/0", Some(INGEST), &segment);
    assert_eq!((status, retry.as_deref()), (503, Some("5")), "{body}");
    let (status, retry, body) = d.call("POST", "/v1/streams", Some(INGEST), PULLED);
    assert_eq!((status, retry.as_deref()), (503, Some("5")), "{body}");

    // Space again: the waiting escalation is written and delivered, readiness returns.
    disk.0.store(false, Ordering::Release);
    wait_hot_escalation_logged(&dir.path().join("data/events.jsonl"));
    wait("readiness back", || (d.readyz().0 == 200).then_some(()));
    assert_eq!(d.metric("firebreak_escalation_accept_errors_total"), 0.0);
}

/// The incident journal and the audit log on a full disk (ENOSPC on every sync): a
/// decision is still made and delivered, readiness turns false with a disk alarm
/// naming the journal, an acknowledgement (whose audit entry cannot be written) is
/// refused and not applied; once there is space the journal catches up without any
/// further change, and the incident survives a restart.
#[test]
fn a_full_disk_under_the_journal_and_audit_loses_no_incident_and_applies_no_unaudited_change() {
    let dir = tempfile::tempdir().unwrap();
    let disk = Arc::new(FullDisk::default());
    let deps = || Dependencies {
        state_sync: disk.clone(),
        ..Dependencies::default()
    };
    let d = serve(dir.path(), "", deps());
    assert_eq!(d.readyz().0, 200);
    disk.0.store(true, Ordering::Release);

    let (_, detail) = push_until_disk_alarm(&d, dir.path());
    assert!(detail.starts_with("journal:"), "{detail}");
    // The decision was made and delivered all the same.
    wait_hot_escalation_logged(&dir.path().join("data/events.jsonl"));
    let incident = incident_of(&d, "hot").expect("the incident");
    let id = incident["id"].as_str().unwrap().to_owned();
    let journal = dir.path().join("data/incidents.jsonl");
    assert!(
        !std::fs::read_to_string(&journal).unwrap().contains(&id),
        "the incident reached the journal on a full disk"
    );

    // An acknowledgement whose audit entry cannot be written: refused, not applied.
    let (status, _, body) = d.call(
        "POST",
        &format!("/v1/escalations/{id}/ack"),
        Some(ADMIN),
        b"",
    );
    assert_eq!(status, 500, "{body}");
    assert_eq!(incident_of(&d, "hot").unwrap()["state"], "open");
    let audit = dir.path().join("data/audit.jsonl");
    assert!(
        !std::fs::read_to_string(&audit)
            .unwrap_or_default()
            .contains(&id)
    );

    // Space again: the journal catches up by itself (no further change needed).
    disk.0.store(false, Ordering::Release);
    wait("the incident in the journal", || {
        std::fs::read_to_string(&journal)
            .unwrap()
            .contains(&id)
            .then_some(())
    });
    let (status, _, body) = d.call(
        "POST",
        &format!("/v1/escalations/{id}/ack"),
        Some(ADMIN),
        b"",
    );
    assert_eq!(status, 200, "{body}");
    wait("readiness back", || (d.readyz().0 == 200).then_some(()));
    let (_, _, ready) = d.call("GET", "/readyz", None, b"");
    assert_eq!(ready["checks"]["alarms"], serde_json::json!([]), "{ready}");

    // After a restart the incident is there, acknowledged once.
    drop(d);
    let d = serve(dir.path(), "", deps());
    let after = incident_of(&d, "hot").expect("the incident after a restart");
    assert_eq!(after["id"], id.as_str());
    assert_eq!(after["state"], "acknowledged");
    let acks = std::fs::read_to_string(&audit)
        .unwrap()
        .lines()
        .filter(|l| l.contains(&id) && l.contains("escalation.ack"))
        .count();
    assert_eq!(acks, 1);
}

fn escalations(d: &Served, query: &str, token: &str) -> Value {
    let (status, _, v) = d.call("GET", &format!("/v1/escalations{query}"), Some(token), b"");
    assert_eq!(status, 200, "{v}");
    v
}

fn incident_of(d: &Served, stream: &str) -> Option<Value> {
    escalations(d, "", READ)["escalations"]
        .as_array()
        .unwrap()
        .iter()
        .find(|e| e["stream_id"] == stream)
        .cloned()
}

/// Reads `escalation` events of the live feed into a channel.
fn feed(d: &Served) -> std::sync::mpsc::Receiver<Value> {
    use std::io::BufRead;
    let r = ureq::AgentBuilder::new()
        .build()
        .get(&format!("{}/v1/events", d.base))
        .set("authorization", &format!("Bearer {READ}"))
        .call()
        .unwrap();
    let (tx, rx) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        let mut kind = String::new();
        for line in std::io::BufReader::new(r.into_reader()).lines() {
            let Ok(line) = line else { return };
            if let Some(k) = line.strip_prefix("event:") {
                kind = k.trim().to_owned();
            } else if let Some(data) = line.strip_prefix("data:")
                && kind == "escalation"
                && tx.send(serde_json::from_str(data.trim()).unwrap()).is_err()
            {
                return;
            }
        }
    });
    rx
}

#[test]
fn new_evidence_reopens_a_resolved_incident() {
    let dir = tempfile::tempdir().unwrap();
    let model = HotModel::default();
    let severe = model.severe.clone();
    let d = serve_with(dir.path(), "", Dependencies::default(), model);
    let live = feed(&d);
    let segment = clip(dir.path());
    let (status, _, body) = d.call("PUT", "/v1/streams/hot/segments/0", Some(INGEST), &segment);
    assert_eq!(status, 200, "{body}");
    let opened = wait("the incident", || incident_of(&d, "hot"));
    let id = opened["id"].as_str().unwrap().to_owned();
    assert_eq!(
        (opened["tier"].as_str(), opened["state"].as_str()),
        (Some("watch"), Some("open"))
    );
    let (status, _, resolved) = d.call(
        "POST",
        &format!("/v1/escalations/{id}/resolve"),
        Some(firebreak_testkit::daemon::OPERATOR),
        br#"{"note":"handled"}"#,
    );
    assert_eq!(status, 200, "{resolved}");
    assert_eq!(resolved["state"], "resolved");

    // The crisis goes on, worse: the next frames bring new evidence.
    severe.store(true, Ordering::Release);
    let (status, _, body) = d.call("PUT", "/v1/streams/hot/segments/1", Some(INGEST), &segment);
    assert_eq!(status, 200, "{body}");
    let reopened = wait("the incident reopened", || {
        incident_of(&d, "hot").filter(|e| e["state"] == "open" && e["tier"] == "crisis")
    });
    assert_eq!(reopened["id"], id.as_str(), "the same incident");
    assert_eq!(reopened["resolved"], Value::Null);
    assert_eq!(reopened["reopened"]["resolved"]["note"], "handled");
    assert_eq!(reopened["reopened"]["resolved"]["by"], "platform");
    // The live feed showed it.
    wait("the reopening on the live feed", || {
        live.try_iter()
            .any(|e| e["id"] == id.as_str() && e["state"] == "open" && !e["reopened"].is_null())
            .then_some(())
    });
    // Audited, for the stream's tenant, as the policy's doing.
    let audit = d
        .call(
            "GET",
            "/v1/audit",
            Some(firebreak_testkit::daemon::OPERATOR),
            b"",
        )
        .2;
    let entry = audit["entries"]
        .as_array()
        .unwrap()
        .iter()
        .find(|e| e["action"] == "escalation.reopen")
        .cloned()
        .unwrap_or_else(|| panic!("no reopen entry: {audit}"));
    assert_eq!(
        (entry["target"].as_str(), entry["credential"].as_str()),
        (Some(id.as_str()), Some("policy"))
    );
    assert_eq!(entry["old"]["note"], "handled");
    // Journaled: the journal's last line for the incident says open, reopened.
    let journal = std::fs::read_to_string(dir.path().join("data/incidents.jsonl")).unwrap();
    let last = journal.lines().rev().find(|l| l.contains(&id)).unwrap();
    assert!(
        last.contains("\"reopened\"") && last.contains("\"open\""),
        "{last}"
    );
}

#[test]
fn the_store_is_bounded_and_the_list_paginated() {
    let dir = tempfile::tempdir().unwrap();
    let d = serve(
        dir.path(),
        "[incidents]\nmax_kept = 3\n",
        Dependencies::default(),
    );
    let segment = clip(dir.path());
    let push = |id: &str| {
        let (status, _, body) = d.call(
            "PUT",
            &format!("/v1/streams/{id}/segments/0"),
            Some(INGEST),
            &segment,
        );
        assert_eq!(status, 200, "{body}");
        wait(&format!("{id}'s incident"), || incident_of(&d, id))
    };
    for id in ["hot1", "hot2", "hot3"] {
        push(id);
    }
    // Pages of two: most recently updated first, then the rest.
    let first = escalations(&d, "?limit=2", READ);
    assert_eq!(
        (first["total"].as_u64(), first["next_offset"].as_u64()),
        (Some(3), Some(2)),
        "{first}"
    );
    assert_eq!(first["escalations"].as_array().unwrap().len(), 2);
    let second = escalations(&d, "?limit=2&offset=2", READ);
    assert_eq!(second["escalations"].as_array().unwrap().len(), 1);
    assert_eq!(second["next_offset"], Value::Null);
    let mut ids: Vec<String> = first["escalations"]
        .as_array()
        .unwrap()
        .iter()
        .chain(second["escalations"].as_array().unwrap())
        .map(|e| e["stream_id"].as_str().unwrap().to_owned())
        .collect();
    ids.sort();
    assert_eq!(ids, ["hot1", "hot2", "hot3"]);
    assert_eq!(
        d.call("GET", "/v1/escalations?limit=0", Some(READ), b"").0,
        400
    );
    assert_eq!(
        d.call("GET", "/v1/escalations?limit=1001", Some(READ), b"")
            .0,
        400
    );

    // Bounded at three: a fourth incident drops the oldest resolved one (hot1, not
    // hot2, also resolved), never an open one.
    for stream in ["hot1", "hot2"] {
        let id = incident_of(&d, stream).unwrap()["id"]
            .as_str()
            .unwrap()
            .to_owned();
        let (status, _, body) = d.call(
            "POST",
            &format!("/v1/escalations/{id}/resolve"),
            Some(firebreak_testkit::daemon::OPERATOR),
            b"",
        );
        assert_eq!(status, 200, "{body}");
    }
    push("hot4");
    let all = escalations(&d, "", READ);
    let mut kept: Vec<&str> = all["escalations"]
        .as_array()
        .unwrap()
        .iter()
        .map(|e| e["stream_id"].as_str().unwrap())
        .collect();
    kept.sort_unstable();
    assert_eq!(kept, ["hot2", "hot3", "hot4"], "{all}");
}

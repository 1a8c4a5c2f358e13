//! Signal recording and replay: a daemon's recorded log replays to the decisions it
//! made; the log's bounds and damage tolerance; deterministic output; a sweep whose
//! answer is known by reasoning; label import.

mod support;

use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::Arc;

use firebreak::signals::labels::{self, Label, Verdict};
use firebreak::signals::log::{self, SegmentWriter, SignalLog, SignalLogConfig};
use firebreak::signals::record::{FrameRecord, SignalRecord};
use firebreak::signals::replay::{ReplayOptions, replay};
use firebreak::signals::{SignalSink, eval};
use firebreak_policy::config::{DEFAULT_POLICY, PolicyConfig};
use firebreak_policy::policy::{ClassifierScore, FrameSignals, Policy};
use serde_json::Value;
use support::{INGEST, READ};

fn bin() -> Command {
    Command::new(env!("CARGO_BIN_EXE_firebreak"))
}

fn frame(stream: &str, wall_ms: u64, media: f64, score: f64) -> SignalRecord {
    SignalRecord::Frame(FrameRecord {
        stream: stream.into(),
        tenant: "t".into(),
        pdq: Some(([3; 32], 100)),
        signals: FrameSignals {
            media_time: media,
            wall_ms,
            hash_matches: Vec::new(),
            video_matches: Vec::new(),
            scores: vec![ClassifierScore {
                category: "graphic_violence".into(),
                score,
                model: "m".into(),
                model_version: "1".into(),
            }],
        },
    })
}

/// The daemon of `a_known_clip_in_a_pushed_stream_escalates_end_to_end` (the clip's
/// hashes in bank `crisis`, the built-in policy) records its signals; `firebreak
/// replay` of that log with the built-in policy gives back the decisions the daemon
/// delivered to its sink, event for event: ids, kinds, tiers and wall times. The
/// daemon's events are read from its JSONL sink, not from the replay code.
#[test]
fn a_daemon_run_replays_to_the_decisions_it_made() {
    let dir = tempfile::tempdir().unwrap();
    let prog = support::programme_with_banked_clip(dir.path());
    let mut d = support::start_in(dir, "[ingest]\nsampling = \"2/s\"\n");
    support::push_file(&d, "prog", &prog);
    d.wait("a crisis escalation", 120, || {
        d.get("/v1/escalations", READ)["escalations"]
            .as_array()
            .unwrap()
            .iter()
            .find(|e| e["stream_id"] == "prog" && e["tier"] == "crisis")
            .cloned()
    });
    assert_eq!(
        d.call("POST", "/v1/streams/prog/end", Some(INGEST), b"").0,
        200
    );
    let sink = d.data().join("events.jsonl");
    let read_events = || -> Vec<Value> {
        std::fs::read_to_string(&sink)
            .unwrap_or_default()
            .lines()
            .map(|l| serde_json::from_str(l).unwrap())
            .collect()
    };
    d.wait("the closing event", 120, || {
        read_events()
            .into_iter()
            .find(|e| e["data"]["kind"] == "ended" || e["data"]["tier"] == "none")
    });
    let status = d.terminate();
    assert!(status.success(), "{}", d.stderr());
    let live: Vec<(String, String, String, String)> = read_events()
        .iter()
        .filter(|e| e["subject"] == "prog")
        .map(|e| {
            (
                e["id"].as_str().unwrap().to_owned(),
                e["data"]["kind"].as_str().unwrap().to_owned(),
                e["data"]["tier"].as_str().unwrap().to_owned(),
                e["data"]["wall_time"].as_str().unwrap().to_owned(),
            )
        })
        .collect();
    assert!(live.len() >= 2, "an escalation and a close: {live:?}");

    let policy = d.data().join("policy.toml");
    std::fs::write(&policy, DEFAULT_POLICY).unwrap();
    let out = d.data().join("replayed.jsonl");
    let run = bin()
        .args(["replay", "--log"])
        .arg(d.data().join("signals"))
        .arg("--policy")
        .arg(&policy)
        .arg("--decisions")
        .arg(&out)
        .output()
        .unwrap();
    assert!(run.status.success(), "{run:?}");
    let replayed: Vec<(String, String, String, String)> = std::fs::read_to_string(&out)
        .unwrap()
        .lines()
        .map(|l| serde_json::from_str::<Value>(l).unwrap())
        .filter(|d| d["stream_id"] == "prog")
        .map(|d| {
            (
                d["id"].as_str().unwrap().to_owned(),
                d["kind"].as_str().unwrap().to_owned(),
                d["tier"].as_str().unwrap().to_owned(),
                firebreak_policy::event::rfc3339(d["wall_ms"].as_u64().unwrap()),
            )
        })
        .collect();
    assert_eq!(replayed, live);
    let text = String::from_utf8(run.stdout).unwrap();
    assert!(
        text.contains("errors: 0 corrupt blocks, 0 truncated tails"),
        "{text}"
    );
}

/// The log rotates at `segment_bytes` and deletes its oldest segments so it never
/// holds more than `max_bytes`; what remains is the newest records, readable.
#[test]
fn the_log_rotates_and_stays_within_its_size_bound() {
    let dir = tempfile::tempdir().unwrap();
    let config = SignalLogConfig {
        segment_bytes: 1 << 16,
        max_bytes: 1 << 18,
        ..SignalLogConfig::default()
    };
    assert!(config.validate().is_empty());
    let dropped = prometheus::IntCounter::new("dropped", "dropped").unwrap();
    let log = SignalLog::open(dir.path(), &config, dropped).unwrap();
    // About 80 bytes a record: 40,000 records are ~12 times the bound.
    const N: u64 = 40_000;
    for i in 0..N {
        log.record(frame("s", i, i as f64, 0.25));
        if i % 1000 == 999 {
            // Keeps the queue from overflowing (a full queue drops records).
            log.flush();
        }
    }
    log.flush();
    log.close();
    assert_eq!(log.dropped(), 0);
    let segments = log::segments(dir.path()).unwrap();
    let sizes: Vec<u64> = segments
        .iter()
        .map(|p| std::fs::metadata(p).unwrap().len())
        .collect();
    assert!(sizes.iter().sum::<u64>() <= 1 << 18, "{sizes:?}");
    assert!(sizes.iter().all(|s| *s <= 1 << 16), "{sizes:?}");
    assert!(
        !segments[0].ends_with("signals-0000000001.fbsig"),
        "the oldest segments are gone"
    );
    let (records, stats) = log::read_all(dir.path()).unwrap();
    assert_eq!(stats.errors(), 0);
    let walls: Vec<u64> = records
        .iter()
        .map(|r| match r {
            SignalRecord::Frame(f) => f.signals.wall_ms,
            other => panic!("{other:?}"),
        })
        .collect();
    assert_eq!(walls.last(), Some(&(N - 1)), "the newest record is kept");
    assert!(walls.windows(2).all(|w| w[1] == w[0] + 1), "contiguous");
    assert!(walls[0] > 0);
}

/// A segment cut inside a block (a torn append) and a block with a flipped byte are
/// counted; the good blocks before them, and the other segments, are still replayed.
#[test]
fn a_torn_tail_and_a_corrupt_block_are_counted_not_fatal() {
    let dir = tempfile::tempdir().unwrap();
    // Two segments of several blocks each (a block is a quarter of a segment).
    let mut w = SegmentWriter::new(dir.path(), 1 << 16).unwrap();
    for i in 0..3000u64 {
        w.push(&frame(if i % 2 == 0 { "a" } else { "b" }, i, i as f64, 0.1))
            .unwrap();
    }
    w.finish().unwrap();
    let segments = log::segments(dir.path()).unwrap();
    assert!(segments.len() >= 3, "{segments:?}");
    let (all, _) = log::read_all(dir.path()).unwrap();
    // Tear the last segment's tail; flip a byte in the first segment's last block.
    let last = segments.last().unwrap();
    let len = std::fs::metadata(last).unwrap().len();
    std::fs::OpenOptions::new()
        .write(true)
        .open(last)
        .unwrap()
        .set_len(len - 5)
        .unwrap();
    let mut first = std::fs::read(&segments[0]).unwrap();
    let n = first.len();
    first[n - 10] ^= 0x40;
    std::fs::write(&segments[0], &first).unwrap();

    let (left, stats) = log::read_all(dir.path()).unwrap();
    assert_eq!((stats.truncated, stats.corrupt), (1, 1), "{stats:?}");
    assert!(!left.is_empty() && left.len() < all.len());

    let policy = dir.path().join("p.toml");
    std::fs::write(&policy, DEFAULT_POLICY).unwrap();
    let run = bin()
        .args(["replay", "--log"])
        .arg(dir.path())
        .arg("--policy")
        .arg(&policy)
        .output()
        .unwrap();
    assert!(run.status.success(), "{run:?}");
    let text = String::from_utf8(run.stdout).unwrap();
    assert!(
        text.contains("errors: 1 corrupt blocks, 1 truncated tails"),
        "{text}"
    );
}

/// A synthetic labelled signal log (`firebreak signals generate`) in `dir/log`.
fn generate_log(dir: &Path, streams: u32, hours: u32) -> PathBuf {
    let log = dir.join("log");
    let generated = bin()
        .args(["signals", "generate", "--streams"])
        .arg(streams.to_string())
        .arg("--hours")
        .arg(hours.to_string())
        .arg("--out")
        .arg(&log)
        .output()
        .unwrap();
    assert!(generated.status.success(), "{generated:?}");
    log
}

/// The same log gives byte-identical output, report included, on one thread or two.
#[test]
fn replay_output_is_byte_identical_across_runs_and_threads() {
    let dir = tempfile::tempdir().unwrap();
    let log = generate_log(dir.path(), 6, 6);
    let policy = dir.path().join("p.toml");
    std::fs::write(&policy, DEFAULT_POLICY).unwrap();
    let strict = dir.path().join("strict.toml");
    std::fs::write(
        &strict,
        DEFAULT_POLICY.replace("enter = 0.8\nexit = 0.6", "enter = 0.9\nexit = 0.6"),
    )
    .unwrap();
    let run = |threads: &str, report: &Path| {
        let out = bin()
            .args(["replay", "--threads", threads, "--log"])
            .arg(&log)
            .arg("--policy")
            .arg(&policy)
            .arg("--compare")
            .arg(&strict)
            .args([
                "--sweep",
                "graphic-violence-persistent.enter=0.6:0.95:0.05",
                "--target-precision",
                "0.9",
                "--report",
            ])
            .arg(report)
            .output()
            .unwrap();
        assert!(out.status.success(), "{out:?}");
        (out.stdout, std::fs::read(report).unwrap())
    };
    let one = run("1", &dir.path().join("r1.html"));
    let two = run("2", &dir.path().join("r2.html"));
    let again = run("2", &dir.path().join("r3.html"));
    assert_eq!(one, two);
    assert_eq!(two, again);
    let text = String::from_utf8(one.0).unwrap();
    assert!(text.contains("recommended for precision >= 0.9"), "{text}");
    let html = String::from_utf8(one.1).unwrap();
    for part in [
        "id=\"pr-curve\"",
        "id=\"ttd-histogram\"",
        "class=\"timeline\"",
    ] {
        assert!(html.contains(part), "{part}");
    }
    for external in ["src=", "<link", "<script", "url("] {
        assert!(!html.contains(external), "no external assets: {external}");
    }
}

/// Three streams, one frame a second for a minute, background score 0.1:
/// - `s1`: 0.9 during [10, 20) s, labelled crisis;
/// - `s2`: a single 0.7 at 50 s, inside a benign label;
/// - `s3`: 0.6 during [30, 40) s, labelled crisis.
///
/// With a one-frame rule (k = n = 1, exit 0.5, hold 1 s, no cool-down), `enter` at or
/// below 0.6 escalates in all three (precision 2/3, recall 1), 0.7 in s1 and s2
/// (1/2, 1/2), 0.8 and above in s1 only (1, 1/2). For a target precision of 0.9 the
/// best is 0.8 (the first of the two with precision 1 and the same recall and time to
/// detect); for 0.6 it is 0.5.
#[test]
fn a_sweep_finds_the_settings_known_by_reasoning() {
    let dir = tempfile::tempdir().unwrap();
    let t0 = 1_800_000_000_000u64;
    let mut w = SegmentWriter::new(dir.path(), 1 << 20).unwrap();
    for s in 0..60u64 {
        let at = t0 + s * 1000;
        w.push(&SignalRecord::Tick { wall_ms: at }).unwrap();
        let v1 = if (10..20).contains(&s) { 0.9 } else { 0.1 };
        let v2 = if s == 50 { 0.7 } else { 0.1 };
        let v3 = if (30..40).contains(&s) { 0.6 } else { 0.1 };
        for (id, v) in [("s1", v1), ("s2", v2), ("s3", v3)] {
            w.push(&frame(id, at, s as f64, v)).unwrap();
        }
    }
    w.finish().unwrap();
    let label = |stream: &str, a: u64, b: u64, verdict| Label {
        stream: stream.into(),
        tenant: "t".into(),
        start_ms: t0 + a * 1000,
        end_ms: t0 + b * 1000,
        verdict,
        by: "test".into(),
        note: String::new(),
    };
    let labels_list = vec![
        label("s1", 10, 20, Verdict::Crisis),
        label("s2", 45, 55, Verdict::Benign),
        label("s3", 30, 40, Verdict::Crisis),
    ];
    labels::append(dir.path(), &labels_list).unwrap();
    let toml = r#"
version = "sweep-test"
tiers = ["review"]
cooldown_secs = 0
[[rule]]
name = "gv"
kind = "classifier"
category = "graphic_violence"
enter = 0.5
exit = 0.5
hold_secs = 1
tier = "review"
"#;
    let base = PolicyConfig::from_toml(toml).unwrap();
    let mut policies = Vec::new();
    for enter in [0.5, 0.6, 0.7, 0.8, 0.9] {
        let mut c = base.clone();
        c.rules[0].enter = enter;
        policies.push(Arc::new(Policy::new(c)));
    }
    let r = replay(dir.path(), &policies, &ReplayOptions::default()).unwrap();
    let got: Vec<(u64, u64, u64, u64)> = (0..policies.len())
        .map(|i| {
            let e = eval::evaluate(&r, i, &policies[i], &labels_list).policy;
            (e.tp, e.fp, e.detected, e.ranges)
        })
        .collect();
    assert_eq!(
        got,
        vec![
            (2, 1, 2, 2),
            (2, 1, 2, 2),
            (1, 1, 1, 2),
            (1, 0, 1, 2),
            (1, 0, 1, 2)
        ]
    );

    let policy = dir.path().join("p.toml");
    std::fs::write(&policy, toml).unwrap();
    for (target, expected) in [("0.9", "gv.enter=0.8"), ("0.6", "gv.enter=0.5")] {
        let out = bin()
            .args(["replay", "--log"])
            .arg(dir.path())
            .arg("--policy")
            .arg(&policy)
            .args([
                "--sweep",
                "gv.enter=0.5:0.95:0.1",
                "--target-precision",
                target,
            ])
            .output()
            .unwrap();
        assert!(out.status.success(), "{out:?}");
        let text = String::from_utf8(out.stdout).unwrap();
        assert!(
            text.contains(&format!(
                "recommended for precision >= {target}: {expected}\n"
            )),
            "{text}"
        );
    }
}

/// A CSV with bad lines imports nothing and names every bad line; a good one imports.
#[test]
fn label_csv_import_refuses_malformed_files_whole() {
    let dir = tempfile::tempdir().unwrap();
    let log = dir.path().join("log");
    let bad = dir.path().join("bad.csv");
    std::fs::write(
        &bad,
        "stream,start,end,label\ncam,1000,2000,crisis\ncam,2000,1000,benign\ncam,x,5,crisis\ncam,1,2,maybe\ncam,1,2\n",
    )
    .unwrap();
    let out = bin()
        .args(["labels", "import", "--tenant", "t", "--log"])
        .arg(&log)
        .arg(&bad)
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(2), "{out:?}");
    let err = String::from_utf8(out.stderr).unwrap();
    for needle in [
        "line 3: end",
        "line 4: start",
        "line 5: label",
        "line 6: expected stream,start,end,label",
    ] {
        assert!(err.contains(needle), "{needle}: {err}");
    }
    assert!(!err.contains("line 2"), "{err}");
    assert!(labels::load(&log).unwrap().is_empty(), "nothing imported");

    let good = dir.path().join("good.csv");
    std::fs::write(
        &good,
        "cam,2026-11-28T15:00:00Z,2026-11-28T15:05:00.5Z,true_crisis\nother,1,2,benign,t2,a note\n",
    )
    .unwrap();
    let out = bin()
        .args(["labels", "import", "--tenant", "t", "--log"])
        .arg(&log)
        .arg(&good)
        .output()
        .unwrap();
    assert!(out.status.success(), "{out:?}");
    let got = labels::load(&log).unwrap();
    assert_eq!(got.len(), 2);
    assert_eq!(
        (
            got[0].start_ms,
            got[0].end_ms,
            got[0].verdict,
            got[0].tenant.as_str()
        ),
        (1_795_878_000_000, 1_795_878_300_500, Verdict::Crisis, "t")
    );
    assert_eq!(
        (got[1].tenant.as_str(), got[1].note.as_str()),
        ("t2", "a note")
    );
}

/// `POST /v1/signals/labels`: read scope refused, operators label their own tenant's
/// streams (not another's), admin may name any tenant; an inverted range is refused
/// with its field; each label is audit-logged and listed to its tenant only; the
/// labels land beside the signal log where replay reads them.
#[test]
fn labels_through_the_api_are_scoped_tenanted_and_audited() {
    let mut d = support::start("");
    let body = |extra: &str| {
        format!(r#"{{"stream":"cam","start_ms":1000,"end_ms":5000,"verdict":"crisis"{extra}}}"#)
    };
    let path = "/v1/signals/labels";
    assert_eq!(d.call("POST", path, Some(READ), body("").as_bytes()).0, 403);
    assert_eq!(d.call("POST", path, None, body("").as_bytes()).0, 401);
    let (status, label) = d.call("POST", path, Some(support::OPERATOR), body("").as_bytes());
    assert_eq!(status, 200, "{label}");
    assert_eq!(label["tenant"], "platform");
    assert_eq!(label["by"], "platform");
    let (status, refused) = d.call(
        "POST",
        path,
        Some(support::OPERATOR),
        body(r#","tenant":"other""#).as_bytes(),
    );
    assert_eq!(status, 403, "{refused}");
    let (status, bad) = d.call(
        "POST",
        path,
        Some(support::OPERATOR),
        br#"{"stream":"cam","start_ms":5000,"end_ms":5000,"verdict":"benign"}"#,
    );
    assert_eq!(status, 422, "{bad}");
    assert!(bad.to_string().contains("end"), "{bad}");
    let (status, other) = d.call(
        "POST",
        path,
        Some(support::OTHER),
        br#"{"stream":"their-cam","start_ms":1,"end_ms":2,"verdict":"benign"}"#,
    );
    assert_eq!(status, 200, "{other}");
    assert_eq!(other["tenant"], "other");
    let (status, by_admin) = d.call(
        "POST",
        path,
        Some(support::ADMIN),
        body(r#","tenant":"other""#).as_bytes(),
    );
    assert_eq!(status, 200, "{by_admin}");
    assert_eq!(
        (&by_admin["tenant"], &by_admin["by"]),
        (&Value::from("other"), &Value::from("ops"))
    );

    let listed = |token: &str| -> Vec<String> {
        d.get(path, token)["labels"]
            .as_array()
            .unwrap()
            .iter()
            .map(|l| {
                format!(
                    "{}/{}",
                    l["tenant"].as_str().unwrap(),
                    l["stream"].as_str().unwrap()
                )
            })
            .collect()
    };
    assert_eq!(listed(READ), ["platform/cam"]);
    assert_eq!(listed(support::OTHER), ["other/their-cam", "other/cam"]);
    assert_eq!(listed(support::ADMIN).len(), 3);
    let audit = d.get("/v1/audit", support::ADMIN);
    let adds = audit["entries"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|e| e["action"] == "label.add")
        .count();
    assert_eq!(adds, 3);
    let status = d.terminate();
    assert!(status.success(), "{}", d.stderr());
    let stored = labels::load(&d.data().join("signals")).unwrap();
    assert_eq!(stored.len(), 3);
}

const SHADOW: &str = r#"
version = "shadow-1"
tiers = ["shadow-crisis"]
cooldown_secs = 5

[[rule]]
name = "any-video"
kind = "video_match"
enter = 0.3
exit = 0.1
tier = "shadow-crisis"
"#;

/// A shadow policy runs beside the built-in one on the banked clip: its decisions go
/// to `shadow.jsonl` and never to the escalation sink (no event of its version or
/// tier there), while the active policy's escalation does. Then `POST
/// /v1/policy/dry-run` with the shadow policy as the proposal (operator scope; read
/// refused; an invalid proposal refused with its issues) answers, per stream, the same
/// escalation counts as `firebreak replay --compare` over the window it reports.
#[test]
fn shadow_decisions_stay_out_of_the_sink_and_a_dry_run_matches_replay() {
    let dir = tempfile::tempdir().unwrap();
    let prog = support::programme_with_banked_clip(dir.path());
    let shadow = dir.path().join("shadow.toml");
    std::fs::write(&shadow, SHADOW).unwrap();
    let mut d = support::start_in(
        dir,
        &format!(
            "[ingest]\nsampling = \"2/s\"\n[signals]\nshadow = [{:?}]\n",
            shadow.to_str().unwrap()
        ),
    );
    support::push_file(&d, "prog", &prog);
    assert_eq!(
        d.call("POST", "/v1/streams/prog/end", Some(INGEST), b"").0,
        200
    );
    let sink = d.data().join("events.jsonl");
    let read_lines = |p: &Path| -> Vec<Value> {
        std::fs::read_to_string(p)
            .unwrap_or_default()
            .lines()
            .map(|l| serde_json::from_str(l).unwrap())
            .collect()
    };
    d.wait("the closing event", 120, || {
        read_lines(&sink)
            .into_iter()
            .find(|e| e["data"]["kind"] == "ended" || e["data"]["tier"] == "none")
    });

    let path = "/v1/policy/dry-run";
    let request = serde_json::json!({"toml": SHADOW, "hours": 1}).to_string();
    assert_eq!(d.call("POST", path, Some(READ), request.as_bytes()).0, 403);
    let (status, bad) = d.call(
        "POST",
        path,
        Some(support::OPERATOR),
        br#"{"rule":"known-video-live","patch":{"exit":0.9}}"#,
    );
    assert_eq!(status, 422, "{bad}");
    assert!(bad.to_string().contains("exit"), "{bad}");
    let (status, dry) = d.call("POST", path, Some(support::OPERATOR), request.as_bytes());
    assert_eq!(status, 200, "{dry}");
    assert!(
        dry["proposed_version"]
            .as_str()
            .unwrap()
            .starts_with("shadow-1+")
    );
    let diffs = dry["streams"].as_array().unwrap().clone();
    assert!(
        diffs.iter().any(|s| s["stream"] == "prog"),
        "the shadow policy escalates to another tier: {dry}"
    );

    // A change applied on a dry-run records it with the policy version; the dry-run
    // must be of that very change.
    let (status, patched_dry) = d.call(
        "POST",
        path,
        Some(support::OPERATOR),
        br#"{"rule":"known-video-live","patch":{"enter":0.6},"hours":1}"#,
    );
    assert_eq!(status, 200, "{patched_dry}");
    let id = patched_dry["id"].as_str().unwrap().to_owned();
    let rule = "/v1/policy/rules/known-video-live";
    for (query, body, want) in [
        (
            "?dry_run=0000000000000000".to_owned(),
            &br#"{"enter":0.6}"#[..],
            409,
        ),
        (format!("?dry_run={id}"), &br#"{"enter":0.7}"#[..], 409),
        (format!("?dry_run={id}"), &br#"{"enter":0.6}"#[..], 200),
    ] {
        let (status, v) = d.call(
            "PATCH",
            &format!("{rule}{query}"),
            Some(support::ADMIN),
            body,
        );
        assert_eq!(status, want, "{query} {v}");
    }
    let latest = support::latest_policy_version(&d);
    assert_eq!(latest["source"], "policy.rule", "{latest}");
    assert_eq!(latest["dry_run"]["id"], id.as_str(), "{latest}");
    assert_eq!(latest["dry_run"]["from_ms"], patched_dry["from_ms"]);
    assert_eq!(latest["dry_run"]["to_ms"], patched_dry["to_ms"]);
    assert_eq!(
        latest["dry_run"]["proposed_sha256"],
        patched_dry["proposed_sha256"]
    );

    let status = d.terminate();
    assert!(status.success(), "{}", d.stderr());
    let delivered = read_lines(&sink);
    assert!(delivered.iter().any(|e| e["data"]["tier"] == "crisis"));
    assert!(
        delivered.iter().all(|e| {
            !e["data"]["policy_version"]
                .as_str()
                .unwrap()
                .starts_with("shadow-1")
                && e["data"]["tier"] != "shadow-crisis"
        }),
        "no shadow decision in the sink"
    );
    let shadowed = read_lines(&d.data().join("signals").join("shadow.jsonl"));
    assert!(
        shadowed.iter().any(|s| s["decision"]["kind"] == "escalated"
            && s["decision"]["tier"] == "shadow-crisis"
            && s["tenant"] == "platform"
            && s["shadow"] == true),
        "{shadowed:?}"
    );

    let active = d.data().join("active.toml");
    std::fs::write(&active, DEFAULT_POLICY).unwrap();
    let run = bin()
        .args(["replay", "--tenant", "platform", "--log"])
        .arg(d.data().join("signals"))
        .arg("--policy")
        .arg(&active)
        .arg("--compare")
        .arg(&shadow)
        .args([
            "--from",
            &dry["from_ms"].to_string(),
            "--to",
            &dry["to_ms"].to_string(),
        ])
        .output()
        .unwrap();
    assert!(run.status.success(), "{run:?}");
    let text = String::from_utf8(run.stdout).unwrap();
    // The replay's per-tier escalation counts of each policy ("policy V" blocks, rows
    // "tier T  N ...").
    let mut blocks: Vec<std::collections::BTreeMap<String, u64>> = Vec::new();
    for line in text.lines() {
        if line.starts_with("policy ") {
            blocks.push(Default::default());
        } else if let (Some(b), Some(row)) = (blocks.last_mut(), line.trim().strip_prefix("tier "))
        {
            let mut f = row.split_whitespace();
            let (tier, n) = (f.next().unwrap(), f.next().unwrap().parse::<u64>().unwrap());
            b.insert(tier.to_owned(), n);
        }
    }
    assert_eq!(blocks.len(), 2, "{text}");
    let total = |b: &std::collections::BTreeMap<String, u64>| b.values().sum::<u64>();
    assert_eq!(
        Value::from(total(&blocks[0])),
        dry["active_escalations"],
        "{text}\n{dry}"
    );
    assert_eq!(
        Value::from(total(&blocks[1])),
        dry["proposed_escalations"],
        "{text}\n{dry}"
    );
    // The dry-run's added escalations are the proposed policy's, its removed ones the
    // active policy's, tier by tier.
    for (field, block) in [("added", &blocks[1]), ("removed", &blocks[0])] {
        let mut tiers: std::collections::BTreeMap<String, u64> = Default::default();
        for s in &diffs {
            for e in s[field].as_array().unwrap() {
                *tiers
                    .entry(e["tier"].as_str().unwrap().to_owned())
                    .or_default() += 1;
            }
        }
        assert!(!tiers.is_empty(), "{field}: {dry}");
        for (tier, n) in tiers {
            assert!(
                block.get(&tier).copied().unwrap_or(0) >= n,
                "{field} {tier}: {text}"
            );
        }
    }
    // Streams whose counts differ: the same in both.
    let (_, differing) = text
        .split_once("where they differ:\n")
        .expect("the comparison section");
    let replayed: Vec<String> = differing
        .lines()
        .take_while(|l| l.starts_with("  "))
        .map(|l| l.trim().to_owned())
        .collect();
    let answered: Vec<String> = diffs
        .iter()
        .filter(|s| s["active"] != s["proposed"])
        .map(|s| {
            format!(
                "{}: {} -> {}",
                s["stream"].as_str().unwrap(),
                s["active"],
                s["proposed"]
            )
        })
        .collect();
    assert_eq!(replayed, answered);
}

/// The HTML report, rendered by headless Chromium (`--dump-dom`: the document after
/// parsing), holds its three kinds of plot with their marks: the precision-recall
/// curve's points, the histogram's bars and each stream's two policy lines.
#[test]
fn the_report_renders_in_headless_chromium_with_its_plots() {
    // Debian's chromium, installed by the test command (a missing browser fails here).
    let chromium = ["chromium", "chromium-browser", "google-chrome"]
        .into_iter()
        .find(|c| {
            Command::new(c)
                .arg("--version")
                .output()
                .is_ok_and(|o| o.status.success())
        })
        .expect("Chromium (apt install chromium)");
    let dir = tempfile::tempdir().unwrap();
    let log = generate_log(dir.path(), 3, 8);
    let policy = dir.path().join("p.toml");
    std::fs::write(&policy, DEFAULT_POLICY).unwrap();
    let report = dir.path().join("report.html");
    let run = bin()
        .args(["replay", "--log"])
        .arg(&log)
        .arg("--policy")
        .arg(&policy)
        .arg("--compare")
        .arg(&policy)
        .args([
            "--sweep",
            "graphic-violence-persistent.enter=0.6:0.9:0.1",
            "--report",
        ])
        .arg(&report)
        .output()
        .unwrap();
    assert!(run.status.success(), "{run:?}");
    let profile = dir.path().join("chromium-profile");
    let out = Command::new(chromium)
        .args(["--headless", "--no-sandbox", "--disable-gpu", "--dump-dom"])
        .arg(format!("--user-data-dir={}", profile.display()))
        .arg(format!("file://{}", report.display()))
        .output()
        .unwrap();
    assert!(out.status.success(), "{out:?}");
    let dom = String::from_utf8(out.stdout).unwrap();
    let count = |needle: &str| dom.matches(needle).count();
    assert!(dom.contains("id=\"pr-curve\""), "{dom}");
    assert_eq!(count("class=\"pt\""), 4, "one point per sweep setting");
    assert!(dom.contains("id=\"ttd-histogram\""));
    assert_eq!(count("class=\"bar\""), 20, "twenty bins");
    assert_eq!(count("class=\"timeline\""), 3, "one per stream");
    assert_eq!(count("class=\"tier\""), 6, "two policies per stream");
}

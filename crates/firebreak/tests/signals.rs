//! Signal recording and replay: a daemon's recorded log replays to the decisions it
//! made; the log's bounds and damage tolerance; deterministic output; a sweep whose
//! answer is known by reasoning; label import.

mod support;

use std::path::Path;
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
    let bytes = std::fs::read(&prog).unwrap();
    for (i, part) in bytes.chunks(64 * 1024).enumerate() {
        let (status, body) = d.call(
            "PUT",
            &format!("/v1/streams/prog/segments/{i}"),
            Some(INGEST),
            part,
        );
        assert_eq!(status, 200, "{body}");
    }
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
    let log = SignalLog::open(dir.path(), &config).unwrap();
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

/// The same log gives byte-identical output, report included, on one thread or two.
#[test]
fn replay_output_is_byte_identical_across_runs_and_threads() {
    let dir = tempfile::tempdir().unwrap();
    let log = dir.path().join("log");
    let generated = bin()
        .args([
            "signals",
            "generate",
            "--streams",
            "6",
            "--hours",
            "6",
            "--out",
        ])
        .arg(&log)
        .output()
        .unwrap();
    assert!(generated.status.success(), "{generated:?}");
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

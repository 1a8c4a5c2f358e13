//! Fleet mode end to end: a real broker (tansu) and several `firebreak run` worker
//! processes. A light profile: no classifiers, the banked clip of the daemon tests
//! (which escalates), sampling 2/s, 4 partitions, a 6 s session timeout.
//!
//! - `a_pushed_known_clip_escalates_through_the_segments_topic`: one worker; a stream
//!   pushed through the hook goes through `firebreak.segments` to its owner, escalates,
//!   and the escalation reaches the Kafka sink.
//!   Every sampled frame's signals reach `firebreak.signals`.
//! - `a_bank_entry_published_while_streams_run_is_matched_on_every_worker`: two
//!   workers without banks; `lists import --publish` mid-stream; both apply the entry
//!   live and every stream escalates on it.
//! - `a_third_worker_takes_a_share_and_unmoved_streams_keep_running`: scale-up under
//!   cooperative-sticky assignment.
//! - `the_stream_quota_is_fleet_wide`: two workers, a quota of two streams per tenant.
//! - `the_request_rate_is_shared_by_the_workers_alive`: two workers, one burst.
//! - `failover_moves_streams_and_keeps_everything_accepted`: 3 workers, 30 streams
//!   (27 pushed through any worker, 3 HLS-pulled from a loopback origin): every stream
//!   runs on exactly one worker; a SIGKILLed worker's streams move to the others; the
//!   sequence numbers answered 202 are exactly those the owners consumed; every pushed
//!   stream escalates once on the escalations topic (none lost, none duplicated by the
//!   move).

mod support;

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{Duration, Instant};

use firebreak_testkit::tansu::TansuBroker;
use serde_json::Value;
use support::{Daemon, INGEST, READ, bank_records_applied, wait_all as wait};

const ESCALATIONS: &str = "escalations";

/// Held by the heaviest tests (failover, broker outage), so they never overlap on two
/// cores: a worker starved of CPU past the session timeout would be a rebalance the test
/// did not cause, on top of the one it checks.
static HEAVY: std::sync::Mutex<()> = std::sync::Mutex::new(());

fn heavy() -> std::sync::MutexGuard<'static, ()> {
    HEAVY.lock().unwrap_or_else(|e| e.into_inner())
}

fn bin() -> &'static Path {
    Path::new(env!("CARGO_BIN_EXE_firebreak"))
}

/// A worker of the fleet on `broker`, with the banks in `banks`.
fn worker(name: &str, broker: &str, banks: &Path) -> Daemon {
    worker_with(name, broker, banks, "")
}

/// [`worker`] with more `[server]` settings (which replace the defaults of the same
/// name).
fn worker_with(name: &str, broker: &str, banks: &Path, server: &str) -> Daemon {
    let defaults: String = [
        "max_streams = 200",
        "tenant_requests_per_sec = 5000",
        "tenant_request_burst = 5000",
    ]
    .iter()
    .filter(|line| {
        let key = line.split(' ').next().unwrap();
        !server.lines().any(|l| l.starts_with(&format!("{key} ")))
    })
    .map(|line| format!("{line}\n"))
    .collect();
    let extra = format!(
        r#"[server]
{server}
{defaults}[ingest]
sampling = "2/s"
idle_timeout_secs = 600
source_allowlist = ["127.0.0.1/32"]
[detectors]
banks_dir = "{banks}"
[sink]
kind = "kafka"
brokers = "{broker}"
topic = "{ESCALATIONS}"
[fleet]
brokers = "{broker}"
partitions = 4
replication = 1
session_timeout_secs = 6
checkpoint_secs = 0.5
max_message_bytes = 32768
"#,
        banks = banks.display(),
    );
    firebreak_testkit::daemon::start_named(bin(), tempfile::tempdir().unwrap(), name, &extra)
}

/// A tenant's stream quota holds across the fleet: streams admitted at one worker
/// count at another (once the state topic shows them), a worker's own burst is
/// counted at once, another tenant has its own quota, and an ended stream frees its
/// place.
#[test]
fn the_stream_quota_is_fleet_wide() {
    let broker = TansuBroker::start().unwrap();
    let dir = tempfile::tempdir().unwrap();
    let (prog, banks) = banked_programme(dir.path());
    let quota = "max_streams_per_tenant = 2";
    let a = worker_with("quota-a", &broker.bootstrap, &banks, quota);
    let b = worker_with("quota-b", &broker.bootstrap, &banks, quota);
    wait_ready(&[&a, &b]);
    let first = Pusher::new(&prog).parts.swap_remove(0);
    let push = |d: &Daemon, token: &str, id: &str| {
        d.call(
            "PUT",
            &format!("/v1/streams/{id}/segments/0"),
            Some(token),
            &first,
        )
    };
    // Two streams of tenant `platform` through worker a, back to back: the third is
    // refused there at once, before the state topic shows either.
    for id in ["q-1", "q-2"] {
        let (status, body) = push(&a, INGEST, id);
        assert_eq!(status, 202, "{id}: {body}");
    }
    let (status, body) = push(&a, INGEST, "q-3");
    assert_eq!(status, 429, "{body}");
    // Once worker b's view shows both running, b refuses the third too, for a pulled
    // registration as well; another tenant is not affected.
    wait(
        "worker b's view to show q-1 and q-2",
        60,
        || {
            let v = fleet_view(&b);
            ["q-1", "q-2"]
                .iter()
                .all(|id| {
                    v.get(*id)
                        .is_some_and(|s| s["state"] != "ended" && s["state"] != "failed")
                })
                .then_some(())
        },
        &[&a, &b],
    );
    let (status, body) = push(&b, INGEST, "q-3");
    assert_eq!(status, 429, "{body}");
    let (status, body) = b.call(
        "POST",
        "/v1/streams",
        Some(INGEST),
        br#"{"id":"q-pulled","url":"rtmp://127.0.0.1:9/live/x"}"#,
    );
    assert_eq!(status, 429, "{body}");
    let (status, body) = push(&b, support::OTHER, "o-1");
    assert_eq!(status, 202, "{body}");
    // q-1 ends: once the view shows it ended, q-3 fits at either worker.
    let (status, body) = b.call("POST", "/v1/streams/q-1/end", Some(INGEST), b"");
    assert_eq!(status, 202, "{body}");
    wait(
        "q-1 ended in worker b's view",
        60,
        || {
            let v = fleet_view(&b);
            v.get("q-1")
                .is_some_and(|s| s["state"] == "ended" || s["state"] == "failed")
                .then_some(())
        },
        &[&a, &b],
    );
    let (status, body) = push(&b, INGEST, "q-3");
    assert_eq!(status, 202, "{body}");
    // Worker a counts q-3 once its view shows it: q-2 and q-3 fill the quota.
    wait(
        "worker a's view to show q-3",
        60,
        || {
            fleet_view(&a)
                .get("q-3")
                .is_some_and(|s| s["state"] != "ended" && s["state"] != "failed")
                .then_some(())
        },
        &[&a, &b],
    );
    let (status, body) = push(&a, INGEST, "q-4");
    assert_eq!(status, 429, "{body}");
}

/// The value of the unlabelled metric `name` on `d` (0 when absent).
fn metric(d: &Daemon, name: &str) -> f64 {
    d.metrics()
        .lines()
        .find_map(|l| l.strip_prefix(&format!("{name} ")))
        .map_or(0.0, |v| v.trim().parse().unwrap())
}

/// Statuses of `n` requests of `token` to `d`, as (not 429, 429).
fn hammer(d: &Daemon, token: &str, n: usize) -> (usize, usize) {
    let limited = (0..n)
        .filter(|_| d.call("GET", "/v1/escalations", Some(token), b"").0 == 429)
        .count();
    (n - limited, limited)
}

/// A tenant's request rate holds for the fleet: each worker grants one over the
/// workers alive (their heartbeats on the state topic) of the rate and the burst.
/// The rate is 0.001/s, so no token refills during the test: alone, a worker grants
/// the whole burst of 20; with two alive, each grants 10, 20 from the fleet.
#[test]
fn the_request_rate_is_shared_by_the_workers_alive() {
    let broker = TansuBroker::start().unwrap();
    let dir = tempfile::tempdir().unwrap();
    let banks = dir.path().join("no-banks");
    std::fs::create_dir_all(&banks).unwrap();
    let server = "metrics_listen = \"127.0.0.1:0\"\ntenant_requests_per_sec = 0.001\ntenant_request_burst = 20";
    let a = worker_with("rate-a", &broker.bootstrap, &banks, server);
    wait_ready(&[&a]);
    wait(
        "worker a to count itself",
        60,
        || (metric(&a, "firebreak_fleet_workers") == 1.0).then_some(()),
        &[&a],
    );
    // Tenant `other` alone on worker a: the whole burst.
    assert_eq!(hammer(&a, support::OTHER, 25), (20, 5));

    let b = worker_with("rate-b", &broker.bootstrap, &banks, server);
    wait_ready(&[&a, &b]);
    wait(
        "both workers to count two",
        60,
        || {
            [&a, &b]
                .iter()
                .all(|d| metric(d, "firebreak_fleet_workers") == 2.0)
                .then_some(())
        },
        &[&a, &b],
    );
    // Tenant `ops`, new on both: half the burst at each, the whole from the fleet.
    assert_eq!(hammer(&a, support::ADMIN, 15), (10, 5));
    assert_eq!(hammer(&b, support::ADMIN, 15), (10, 5));
}

/// Waits until every one of `ws` answers `/readyz` with 200 (group joined, shared
/// topics read).
fn wait_ready(ws: &[&Daemon]) {
    wait(
        "every worker ready",
        90,
        || {
            ws.iter()
                .all(|w| w.call("GET", "/readyz", None, b"").0 == 200)
                .then_some(())
        },
        ws,
    );
}

/// The fleet view (`GET /v1/streams` of `d`), by stream id.
fn fleet_view(d: &Daemon) -> BTreeMap<String, Value> {
    let (code, v) = d.call("GET", "/v1/streams", Some(READ), b"");
    if code != 200 {
        return BTreeMap::new();
    }
    v["streams"]
        .as_array()
        .cloned()
        .unwrap_or_default()
        .into_iter()
        .map(|s| (s["id"].as_str().unwrap_or_default().to_owned(), s))
        .collect()
}

/// The sequence numbers of a fleet view entry's `consumed_segments`.
fn consumed(s: &Value) -> BTreeSet<u64> {
    let mut out = BTreeSet::new();
    for r in s["consumed_segments"].as_array().into_iter().flatten() {
        let (a, b) = (r["first"].as_u64().unwrap(), r["last"].as_u64().unwrap());
        out.extend(a..=b);
    }
    out
}

/// Which of `workers` run stream `id` right now (its series on their `/metrics`).
fn running_on(workers: &[&Daemon], ids: &[String]) -> HashMap<String, Vec<usize>> {
    let texts: Vec<String> = workers.iter().map(|w| w.metrics()).collect();
    ids.iter()
        .map(|id| {
            let needle = format!("firebreak_stream_last_frame_age_seconds{{stream=\"{id}\"}}");
            let on = texts
                .iter()
                .enumerate()
                .filter(|(_, t)| t.contains(&needle))
                .map(|(i, _)| i)
                .collect();
            (id.clone(), on)
        })
        .collect()
}

/// An HLS VOD of 3 one-second segments in `web`, served on loopback; returns the
/// playlist URL and the server.
fn hls_origin(web: &Path) -> (String, std::process::Child) {
    std::fs::create_dir_all(web).unwrap();
    let ok = Command::new("ffmpeg")
        .args(["-v", "error", "-f", "lavfi", "-t", "3", "-i"])
        .arg("testsrc2=size=160x120:rate=25")
        .args(["-c:v", "libx264", "-preset", "ultrafast", "-g", "25"])
        .args(["-f", "hls", "-hls_time", "1", "-hls_playlist_type", "vod"])
        .arg(web.join("index.m3u8"))
        .status()
        .unwrap()
        .success();
    assert!(ok);
    let port = support::free_port();
    let server = Command::new("python3")
        .args([
            "-m",
            "http.server",
            "--bind",
            "127.0.0.1",
            &port.to_string(),
        ])
        .current_dir(web)
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null())
        .spawn()
        .unwrap();
    (format!("http://127.0.0.1:{port}/index.m3u8"), server)
}

/// The escalation events on the topic, read until `deadline`: (stream, kind, incident).
fn escalation_events(
    bootstrap: &str,
    want: usize,
    deadline: Duration,
) -> Vec<(String, String, String)> {
    // Before the first escalation the topic does not exist: nothing yet.
    firebreak_testkit::kafka::read_topic(bootstrap, ESCALATIONS, want, deadline)
        .unwrap_or_default()
        .into_iter()
        .map(|m| {
            let v: Value = serde_json::from_slice(&m.payload).unwrap();
            (
                v["subject"].as_str().unwrap_or_default().to_owned(),
                v["data"]["kind"].as_str().unwrap_or_default().to_owned(),
                v["data"]["incident_id"]
                    .as_str()
                    .unwrap_or_default()
                    .to_owned(),
            )
        })
        .collect()
}

/// How many 64 KiB segments of `file` hold every packet before media time `secs`
/// (packet positions as ffprobe reports them).
fn segments_through(file: &Path, secs: f64) -> usize {
    let out = Command::new("ffprobe")
        .args(["-v", "error", "-select_streams", "v:0", "-show_entries"])
        .args(["packet=pts_time,pos", "-of", "csv=p=0"])
        .arg(file)
        .output()
        .unwrap();
    assert!(out.status.success());
    let packets = String::from_utf8(out.stdout)
        .unwrap()
        .lines()
        .filter_map(|l| {
            let mut fields = l.split(',');
            let (t, pos) = (fields.next()?, fields.next()?);
            Some((t.parse::<f64>().ok()?, pos.parse::<u64>().ok()?))
        })
        .collect::<Vec<_>>();
    // MPEG-TS timestamps do not start at 0: media time counts from the earliest.
    let first = packets.iter().map(|p| p.0).fold(f64::INFINITY, f64::min);
    let last_pos = packets
        .iter()
        .filter(|(t, _)| t - first < secs)
        .map(|&(_, pos)| pos)
        .max()
        .unwrap();
    // The packet starting at `last_pos` may span a few TS packets more.
    (last_pos as usize + 4096) / (64 * 1024) + 1
}

/// Waits until every stream of `ids` has an `escalated` event on the topic (reads of
/// `read_secs` each, up to `secs` in all); returns every event then read.
fn wait_escalated(
    bootstrap: &str,
    ids: &[String],
    read_secs: u64,
    secs: u64,
    logs: &[&Daemon],
) -> Vec<(String, String, String)> {
    let events = wait(
        "every stream escalated",
        secs,
        || {
            let ev = escalation_events(bootstrap, usize::MAX, Duration::from_secs(read_secs));
            let streams: BTreeSet<&String> = ev
                .iter()
                .filter(|(_, kind, _)| kind == "escalated")
                .map(|(s, _, _)| s)
                .collect();
            (streams.len() == ids.len()).then_some(ev.clone())
        },
        logs,
    );
    let escalated: BTreeSet<&String> = events
        .iter()
        .filter(|(_, kind, _)| kind == "escalated")
        .map(|(s, _, _)| s)
        .collect();
    assert_eq!(escalated, ids.iter().collect(), "{events:?}");
    events
}

struct Pusher {
    parts: Vec<Vec<u8>>,
    /// Sequence numbers answered 202, by stream.
    accepted: BTreeMap<String, BTreeSet<u64>>,
    /// Retry a segment answered 503 (as a pusher following `Retry-After` does) for up
    /// to this long; `None`: a 503 fails the test.
    retry_for: Option<Duration>,
}

impl Pusher {
    fn new(programme: &Path) -> Pusher {
        let bytes = std::fs::read(programme).unwrap();
        Pusher {
            parts: bytes.chunks(64 * 1024).map(<[u8]>::to_vec).collect(),
            accepted: BTreeMap::new(),
            retry_for: None,
        }
    }

    /// Pushes segments `seqs` of every stream in `ids`, round robin over `to`.
    fn push(&mut self, ids: &[String], seqs: std::ops::Range<usize>, to: &[&Daemon]) {
        let mut k = 0;
        for seq in seqs {
            for id in ids {
                let d = to[k % to.len()];
                k += 1;
                let started = Instant::now();
                let (status, body) = loop {
                    let (status, body) = d.call(
                        "PUT",
                        &format!("/v1/streams/{id}/segments/{seq}"),
                        Some(INGEST),
                        &self.parts[seq],
                    );
                    match self.retry_for {
                        Some(t) if status == 503 && started.elapsed() < t => {
                            std::thread::sleep(Duration::from_millis(250))
                        }
                        _ => break (status, body),
                    }
                };
                assert_eq!(status, 202, "{id}/{seq}: {body}");
                assert_eq!(body["sequence"], seq as u64, "{body}");
                self.accepted
                    .entry(id.clone())
                    .or_default()
                    .insert(seq as u64);
            }
        }
    }
}

/// The programme with its banked clip, and 10 s of bars after the clip: what a new
/// owner decodes after a failover (it starts decoding a resumed stream once FFmpeg has
/// probed about 5 s of it).
fn banked_programme(dir: &Path) -> (PathBuf, PathBuf) {
    let prog = support::programme_with_banked_clip_and_tail(dir, 10);
    (prog, dir.join("data").join("banks"))
}

/// One fleet worker: a pushed stream goes through `firebreak.segments` to its owner
/// (here the same worker), escalates, and the escalation reaches the Kafka sink.
#[test]
fn a_pushed_known_clip_escalates_through_the_segments_topic() {
    let broker = TansuBroker::start().unwrap();
    let dir = tempfile::tempdir().unwrap();
    let (prog, banks) = banked_programme(dir.path());
    let w = worker("solo", &broker.bootstrap, &banks);
    wait_ready(&[&w]);
    let mut pusher = Pusher::new(&prog);
    let n = pusher.parts.len();
    pusher.push(&["solo-1".to_owned()], 0..n, &[&w]);
    let esc = wait(
        "a crisis escalation on the owner",
        90,
        || {
            let (_, list) = w.call("GET", "/v1/escalations", Some(READ), b"");
            list["escalations"]
                .as_array()?
                .iter()
                .find(|e| e["stream_id"] == "solo-1" && e["tier"] == "crisis")
                .cloned()
        },
        &[&w],
    );
    assert!(esc["evidence"].to_string().contains("known-clip"), "{esc}");
    // Each segment's delay from the hook to the owner's decoder was observed once, and
    // the lag of the stream's partition is exported.
    let m = wait(
        "every segment's delay observed",
        60,
        || {
            let m = w.metrics();
            let count = m
                .lines()
                .find_map(|l| l.strip_prefix("firebreak_fleet_segment_delay_seconds_count "))
                .and_then(|v| v.trim().parse::<usize>().ok());
            (count == Some(n)).then_some(m)
        },
        &[&w],
    );
    assert!(
        m.contains("firebreak_fleet_segment_lag_ms{partition=\""),
        "{m}"
    );
    let events = wait(
        "the escalation on the topic",
        60,
        || {
            let ev = escalation_events(&broker.bootstrap, 1, Duration::from_secs(5));
            (!ev.is_empty()).then_some(ev)
        },
        &[&w],
    );
    assert_eq!(events[0].0, "solo-1");
    assert_eq!(events[0].1, "escalated");

    // Every sampled frame's signals are on `firebreak.signals`, keyed by the stream:
    // as many frame records as the stream sampled, in media order, each with its PDQ
    // hash, the clip's frames with the live-window match behind the escalation.
    let frames = |recs: &[firebreak_testkit::kafka::TopicMessage]| {
        let mut out = Vec::new();
        for m in recs.iter().filter(|m| m.key == "solo-1") {
            for r in firebreak::signals::record::decode_block(&m.payload).unwrap() {
                if let firebreak::signals::SignalRecord::Frame(f) = r {
                    out.push(f);
                }
            }
        }
        out
    };
    let (recorded, sampled) = wait(
        "every sampled frame's signals on the topic",
        90,
        || {
            // A reader joins a group first: about half the session timeout on tansu.
            let recs = firebreak_testkit::kafka::read_topic(
                &broker.bootstrap,
                "firebreak.signals",
                usize::MAX,
                Duration::from_secs(10),
            )
            .ok()?;
            let (_, s) = w.call("GET", "/v1/streams/solo-1", Some(READ), b"");
            let sampled = s["frames"]["sampled"].as_u64()?;
            let recorded = frames(&recs);
            eprintln!(
                "signals: {} frame records of {sampled} sampled",
                recorded.len()
            );
            (recorded.len() as u64 == sampled && sampled >= 30).then_some((recorded, sampled))
        },
        &[&w],
    );
    assert_eq!(recorded.len() as u64, sampled);
    assert!(
        recorded
            .iter()
            .all(|f| f.pdq.is_some() && f.tenant == "platform")
    );
    assert!(
        recorded
            .windows(2)
            .all(|p| p[0].signals.media_time < p[1].signals.media_time)
    );
    assert!(recorded.iter().any(|f| {
        f.signals
            .video_matches
            .iter()
            .any(|v| v.entry_id == "known-clip" && v.percent >= 50.0)
    }));
}

/// Which workers (`worker` of the fleet view) run `ids`, once every one is in the view
/// and none is between two owners (`moving`).
fn owners(d: &Daemon, ids: &[String]) -> Option<BTreeMap<String, String>> {
    let view = fleet_view(d);
    ids.iter()
        .map(|id| {
            let s = view.get(id)?;
            if s["state"] == "moving" {
                return None;
            }
            Some((id.clone(), s["worker"].as_str()?.to_owned()))
        })
        .collect()
}

/// Two workers start with no bank entry; streams run on both; the clip's entry is
/// published to `firebreak.banks` with `firebreak lists import --publish`: both workers
/// apply it live (no restart, no reload) and every stream, on either worker, escalates
/// on it.
#[test]
fn a_bank_entry_published_while_streams_run_is_matched_on_every_worker() {
    let broker = TansuBroker::start().unwrap();
    let dir = tempfile::tempdir().unwrap();
    let (clip, prog) = support::programme(dir.path());
    let empty = dir.path().join("no-banks");
    std::fs::create_dir_all(&empty).unwrap();
    let workers: Vec<Daemon> = (0..2)
        .map(|i| worker(&format!("b{i}"), &broker.bootstrap, &empty))
        .collect();
    let ws: Vec<&Daemon> = workers.iter().collect();
    wait_ready(&ws);

    // Streams run on both workers: the programme's first 5 s (before the clip).
    let ids: Vec<String> = (0..8).map(|i| format!("live-{i}")).collect();
    let mut pusher = Pusher::new(&prog);
    let n = pusher.parts.len();
    let first = segments_through(&prog, 5.0);
    assert!(first < n);
    pusher.push(&ids, 0..first, &ws);
    let owned = wait(
        "every stream in the fleet view",
        60,
        || owners(ws[0], &ids),
        &ws,
    );
    let by: BTreeSet<&String> = owned.values().collect();
    assert_eq!(by.len(), 2, "the streams run on both workers: {owned:?}");

    // The entry, published by an operator's import.
    let publisher = dir.path().join("publisher");
    let hashes = support::firebreak(
        &["hash", "vpdq", "-r", "1", clip.to_str().unwrap()],
        &publisher,
    );
    assert!(hashes.status.success());
    let vpdq = dir.path().join("clip.vpdq");
    std::fs::write(&vpdq, &hashes.stdout).unwrap();
    let target = format!("{}/firebreak.banks", broker.bootstrap);
    let import = support::firebreak(
        &[
            "lists",
            "import",
            vpdq.to_str().unwrap(),
            "--format",
            "vpdq",
            "--bank",
            "crisis",
            "--id",
            "known-clip",
            "--publish",
            &target,
        ],
        &publisher,
    );
    assert!(import.status.success(), "{import:?}");
    wait(
        "the entry applied on both workers",
        60,
        || {
            ws.iter()
                .all(|w| bank_records_applied(w) == 1)
                .then_some(())
        },
        &ws,
    );

    // The rest of every stream: each escalates on the published entry.
    pusher.push(&ids, first..n, &ws);
    wait_escalated(&broker.bootstrap, &ids, 5, 120, &ws);
    for w in &ws {
        let (_, list) = w.call("GET", "/v1/escalations", Some(READ), b"");
        for e in list["escalations"].as_array().unwrap() {
            assert!(e["evidence"].to_string().contains("known-clip"), "{e}");
        }
    }
}

/// How many times `d` started running stream `id` (its "runs here" log lines).
fn starts(d: &Daemon, id: &str) -> usize {
    let needle = format!("pushed stream runs here stream={id} ");
    d.stderr().lines().filter(|l| l.contains(&needle)).count()
}

/// Scale-up: two workers run 8 pushed streams; a third joins and takes a share. With
/// cooperative-sticky assignment the others only give up what moves: a stream that
/// does not move is never stopped (started once on its owner), a moved one resumes on
/// the newcomer from its state; then the clip arrives and every stream escalates
/// exactly once.
#[test]
fn a_third_worker_takes_a_share_and_unmoved_streams_keep_running() {
    let broker = TansuBroker::start().unwrap();
    let dir = tempfile::tempdir().unwrap();
    let (prog, banks) = banked_programme(dir.path());
    let mut workers = vec![
        worker("s0", &broker.bootstrap, &banks),
        worker("s1", &broker.bootstrap, &banks),
    ];
    {
        let ws: Vec<&Daemon> = workers.iter().collect();
        wait_ready(&ws);
    }
    let ids: Vec<String> = (0..8).map(|i| format!("scale-{i}")).collect();
    let mut pusher = Pusher::new(&prog);
    let n = pusher.parts.len();
    let first = segments_through(&prog, 5.0);
    {
        let ws: Vec<&Daemon> = workers.iter().collect();
        pusher.push(&ids, 0..first, &ws);
    }
    let before = {
        let ws: Vec<&Daemon> = workers.iter().collect();
        wait(
            "every stream in the fleet view",
            60,
            || owners(ws[0], &ids),
            &ws,
        )
    };

    workers.push(worker("s2", &broker.bootstrap, &banks));
    let ws: Vec<&Daemon> = workers.iter().collect();
    let after = wait(
        "the newcomer running a share of the streams",
        120,
        || {
            let now = owners(ws[0], &ids)?;
            let moved: Vec<&String> = ids.iter().filter(|id| now[*id] == "s2").collect();
            let settled = !moved.is_empty()
                && moved.iter().all(|id| starts(ws[2], id) == 1)
                && ids
                    .iter()
                    .all(|id| now[id] == "s2" || now[id] == before[id]);
            settled.then_some(now)
        },
        &ws,
    );
    for id in &ids {
        if after[id] == "s2" {
            assert!(
                ws[2].stderr().contains(&format!("stream={id} partition=")),
                "{id}"
            );
        } else {
            let owner = if before[id] == "s0" { ws[0] } else { ws[1] };
            assert_eq!(starts(owner, id), 1, "{id} was restarted on {}", before[id]);
            assert_eq!(starts(ws[2], id), 0, "{id}");
        }
    }

    // The clip: every stream escalates once, wherever it runs now.
    pusher.push(&ids, first..n, &ws);
    let events = wait_escalated(&broker.bootstrap, &ids, 8, 120, &ws);
    for id in &ids {
        let escalated = events
            .iter()
            .filter(|(s, k, _)| s == id && k == "escalated")
            .count();
        assert_eq!(escalated, 1, "{id}: {events:?}");
    }
}

/// Broker faults: mid-run the broker becomes unreachable (open connections reset, new
/// ones refused) for longer than the group's session timeout, then comes back with its
/// state. The workers reconnect and rejoin; a segment pushed during the outage is
/// answered once the broker has acknowledged it (or 503, and retried); every segment
/// answered 202 is consumed by an owner; every stream escalates exactly once, in one
/// incident, its escalation delivered from the outbox once the broker is back.
#[test]
fn workers_ride_out_a_broker_outage_and_lose_nothing_accepted() {
    let _heavy = heavy();
    let (_broker, proxy) = TansuBroker::start_behind_proxy().unwrap();
    let bootstrap = proxy.listen.to_string();
    let dir = tempfile::tempdir().unwrap();
    let (prog, banks) = banked_programme(dir.path());
    let (a, b) = (
        worker("out-a", &bootstrap, &banks),
        worker("out-b", &bootstrap, &banks),
    );
    let ws = [&a, &b];
    wait_ready(&ws);
    let ids: Vec<String> = (0..6).map(|i| format!("out-{i}")).collect();
    let mut pusher = Pusher::new(&prog);
    pusher.retry_for = Some(Duration::from_secs(90));
    let n = pusher.parts.len();
    // The outage starts 8 s into the programme, before the clip's matches reach the
    // video rule's level (about 14 s): the escalations happen and are delivered after it.
    let cut = segments_through(&prog, 8.0);
    assert!(cut + 1 < n, "{cut} of {n}");
    pusher.push(&ids, 0..cut, &ws);
    wait(
        "the first segments consumed",
        60,
        || {
            let view = fleet_view(&a);
            ids.iter()
                .all(|id| {
                    view.get(id)
                        .is_some_and(|s| consumed(s) == pusher.accepted[id])
                })
                .then_some(())
        },
        &ws,
    );

    proxy.cut();
    std::thread::scope(|s| {
        // One more segment of every stream, pushed while the broker is away.
        let during = s.spawn(|| pusher.push(&ids, cut..cut + 1, &ws));
        // The outage: 8 s, longer than the 6 s session timeout, so the broker drops
        // both members from the group and they must rejoin.
        std::thread::sleep(Duration::from_secs(8));
        assert!(
            !during.is_finished(),
            "every segment was answered while the broker was unreachable"
        );
        let restored = Instant::now();
        proxy.restore().unwrap();
        during.join().unwrap();
        eprintln!(
            "the segments pushed during the outage were accepted {:?} after the broker came back",
            restored.elapsed()
        );
    });
    pusher.push(&ids, cut + 1..n, &ws);

    // Everything accepted was consumed, every stream on exactly one worker (seen from
    // both workers' fleet views).
    let mut last = String::new();
    wait(
        "everything accepted consumed after the outage",
        180,
        || {
            let views = [fleet_view(&a), fleet_view(&b)];
            let on = running_on(&ws, &ids);
            let ok = ids.iter().all(|id| {
                on[id].len() == 1
                    && views.iter().all(|v| {
                        v.get(id)
                            .is_some_and(|s| consumed(s) == pusher.accepted[id])
                    })
            });
            if !ok {
                let now = ids
                    .iter()
                    .map(|id| {
                        let c: Vec<String> = views
                            .iter()
                            .map(|v| format!("{:?}", v.get(id).map(consumed)))
                            .collect();
                        format!(
                            "{id}: on {:?}, consumed per view {c:?}, accepted {:?}",
                            on[id], pusher.accepted[id]
                        )
                    })
                    .collect::<Vec<_>>()
                    .join("\n");
                if now != last {
                    eprintln!("not yet:\n{now}");
                    last = now;
                }
            }
            ok.then_some(())
        },
        &ws,
    );
    for id in &ids {
        assert_eq!(pusher.accepted[id].len(), n, "{id}");
    }
    wait_escalated(&bootstrap, &ids, 12, 240, &ws);
    let events = escalation_events(&bootstrap, usize::MAX, Duration::from_secs(10));
    for id in &ids {
        let mine: Vec<_> = events.iter().filter(|(s, _, _)| s == id).collect();
        let escalated = mine.iter().filter(|(_, k, _)| k == "escalated").count();
        assert_eq!(escalated, 1, "{id}: {mine:?}");
        let incidents: BTreeSet<&String> = mine.iter().map(|(_, _, i)| i).collect();
        assert_eq!(incidents.len(), 1, "{id}: {mine:?}");
    }
    // Both workers are in service again.
    wait_ready(&ws);
}

#[test]
fn failover_moves_streams_and_keeps_everything_accepted() {
    let _heavy = heavy();
    let broker = TansuBroker::start().unwrap();
    let dir = tempfile::tempdir().unwrap();
    let (prog, banks) = banked_programme(dir.path());
    let mut workers: Vec<Option<Daemon>> = (0..3)
        .map(|i| Some(worker(&format!("w{i}"), &broker.bootstrap, &banks)))
        .collect();
    let live = |ws: &[Option<Daemon>]| -> Vec<usize> {
        ws.iter()
            .enumerate()
            .filter(|(_, w)| w.is_some())
            .map(|(i, _)| i)
            .collect()
    };
    let pushed: Vec<String> = (0..27).map(|i| format!("push-{i:02}")).collect();
    let pulled: Vec<String> = (0..3).map(|i| format!("hls-{i}")).collect();
    let all: Vec<String> = pushed.iter().chain(&pulled).cloned().collect();

    // Every worker is in the group before streams arrive.
    {
        let ws: Vec<&Daemon> = workers.iter().flatten().collect();
        wait_ready(&ws);
    }

    // Pulled streams, registered through any worker.
    let (url, mut origin) = hls_origin(&dir.path().join("web"));
    {
        let ws: Vec<&Daemon> = workers.iter().flatten().collect();
        wait(
            "the HLS origin",
            30,
            || ureq::get(&url).call().ok().map(|_| ()),
            &ws,
        );
        for (i, id) in pulled.iter().enumerate() {
            let spec = serde_json::json!({"id": id, "hls": url}).to_string();
            let (status, body) =
                ws[i % 3].call("POST", "/v1/streams", Some(INGEST), spec.as_bytes());
            assert_eq!(status, 202, "{body}");
        }
    }

    // The first part of every pushed stream (into the clip), through any worker.
    let mut pusher = Pusher::new(&prog);
    let n = pusher.parts.len();
    assert!(n >= 12, "{n} segments");
    // Up to 16 s of media: the whole clip (6-16 s). Its 2/s samples match the 1/s bank
    // at 50 % of a 10 s window only from about 14 s on (measured with `firebreak hash
    // vpdq`), so an earlier cut would leave streams below the video rule's level.
    let cut = segments_through(&prog, 16.0);
    assert!(cut < n, "{cut} of {n}");
    {
        let ws: Vec<&Daemon> = workers.iter().flatten().collect();
        pusher.push(&pushed, 0..cut, &ws);
    }

    // Every pushed stream escalates (its events delivered to Kafka) and runs on
    // exactly one worker; every stream is in the fleet view. (The pulled streams are
    // short and may have ended already: their owners are checked below.)
    let before = {
        let ws: Vec<&Daemon> = workers.iter().flatten().collect();
        wait_escalated(&broker.bootstrap, &pushed, 12, 240, &ws);
        wait(
            "every stream on exactly one worker",
            120,
            || {
                let on = running_on(&ws, &pushed);
                let view = fleet_view(ws[0]);
                let ok =
                    on.values().all(|w| w.len() == 1) && all.iter().all(|id| view.contains_key(id));
                ok.then_some(on)
            },
            &ws,
        )
    };
    // The HLS streams ran to their end on one worker each.
    {
        let ws: Vec<&Daemon> = workers.iter().flatten().collect();
        wait(
            "the pulled streams ended",
            120,
            || {
                let view = fleet_view(ws[0]);
                pulled
                    .iter()
                    .all(|id| {
                        view.get(id).is_some_and(|s| {
                            s["state"] == "ended"
                                && s["frames"]["decoded"].as_u64() > Some(0)
                                && s["worker"].as_str().is_some_and(|w| w.starts_with('w'))
                        })
                    })
                    .then_some(())
            },
            &ws,
        );
    }

    // SIGKILL the worker running the most pushed streams.
    let victim = (0..3)
        .max_by_key(|&i| pushed.iter().filter(|id| before[*id] == vec![i]).count())
        .unwrap();
    let moved: Vec<String> = pushed
        .iter()
        .filter(|id| before[*id] == vec![victim])
        .cloned()
        .collect();
    assert!(!moved.is_empty());
    let victim_name = format!("w{victim}");
    {
        let w = workers[victim].as_mut().unwrap();
        w.child.kill().unwrap();
        w.child.wait().unwrap();
    }
    let killed_at = Instant::now();
    workers[victim] = None;
    let survivors = live(&workers);
    let ws: Vec<&Daemon> = survivors
        .iter()
        .map(|&i| workers[i].as_ref().unwrap())
        .collect();

    // The rest of every pushed stream, through the survivors; the new owners resume
    // each stream after its last committed segment.
    pusher.push(&pushed, cut..n, &ws);

    // The moved streams run on one survivor each; what was accepted was consumed.
    let view = wait(
        "the victim's streams on the survivors, everything accepted consumed",
        180,
        || {
            let view = fleet_view(ws[0]);
            let on = running_on(&ws, &moved);
            let ok = moved.iter().all(|id| on[id].len() == 1)
                && pushed.iter().all(|id| {
                    view.get(id).is_some_and(|s| {
                        s["worker"] != victim_name.as_str() && consumed(s) == pusher.accepted[id]
                    })
                });
            ok.then_some(view)
        },
        &ws,
    );
    eprintln!(
        "SIGKILL of {victim_name}: its {} streams moved and caught up within {:?}",
        moved.len(),
        killed_at.elapsed()
    );
    for id in &moved {
        assert_ne!(view[id]["worker"], victim_name.as_str());
    }

    // No escalation lost, none duplicated: one `escalated` per pushed stream, one
    // incident per stream (its later events, if any, continue that incident).
    let events = escalation_events(&broker.bootstrap, usize::MAX, Duration::from_secs(15));
    for id in &pushed {
        let mine: Vec<_> = events.iter().filter(|(s, _, _)| s == id).collect();
        let escalated = mine.iter().filter(|(_, k, _)| k == "escalated").count();
        assert_eq!(escalated, 1, "{id}: {mine:?}");
        let incidents: BTreeSet<&String> = mine.iter().map(|(_, _, i)| i).collect();
        assert_eq!(incidents.len(), 1, "{id}: {mine:?}");
    }
    let _ = origin.kill();
    let _ = origin.wait();
}

fn percentile(v: &mut [f64], p: f64) -> f64 {
    v.sort_by(|a, b| a.partial_cmp(b).unwrap());
    v[((v.len() as f64 - 1.0) * p).round() as usize]
}

/// Measurements, not assertions (`scripts/fleet-measure.sh`): push-hook latency with
/// acks=all and throughput through one worker; rebalance time after SIGKILL and after
/// a graceful stop (time until the survivor publishes the victim's stream as its own).
#[test]
#[ignore = "a measurement: scripts/fleet-measure.sh"]
fn measure_fleet() {
    let broker = TansuBroker::start().unwrap();
    let dir = tempfile::tempdir().unwrap();
    let banks = dir.path().join("banks");
    std::fs::create_dir_all(&banks).unwrap();
    let clip = dir.path().join("clip.ts");
    support::encode("testsrc2=size=160x90:rate=25", 4, 25, &clip);
    let bytes = std::fs::read(&clip).unwrap();
    let part = &bytes[..bytes.len().min(16 * 1024)];

    // Push-hook latency, sequential, one worker.
    let a = worker("m0", &broker.bootstrap, &banks);
    wait_ready(&[&a]);
    let runs: usize = std::env::var("FLEET_PUSHES")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(400);
    let mut lat = Vec::new();
    for i in 0..runs {
        let t = Instant::now();
        let (status, body) = a.call(
            "PUT",
            &format!("/v1/streams/lat-{}/segments/{}", i % 20, i / 20),
            Some(INGEST),
            part,
        );
        assert_eq!(status, 202, "{body}");
        lat.push(t.elapsed().as_secs_f64() * 1000.0);
    }
    let (p50, p99) = (percentile(&mut lat, 0.5), percentile(&mut lat, 0.99));
    println!(
        "MEASURE push-hook latency (acks=all, {} B, sequential, n={runs}): p50 {p50:.1} ms, p99 {p99:.1} ms",
        part.len()
    );
    // Throughput: 8 concurrent pushers to one worker.
    let base = a.base.clone();
    let t = Instant::now();
    let per = runs / 8;
    std::thread::scope(|s| {
        for c in 0..8 {
            let base = base.clone();
            s.spawn(move || {
                for i in 0..per {
                    let r = ureq::put(&format!("{base}/v1/streams/tp-{c}/segments/{i}"))
                        .set("Authorization", &format!("Bearer {INGEST}"))
                        .send_bytes(part);
                    assert_eq!(support::response(r).0, 202);
                }
            });
        }
    });
    let secs = t.elapsed().as_secs_f64();
    println!(
        "MEASURE push-hook throughput (8 clients, one worker): {:.0} segments/s",
        (per * 8) as f64 / secs
    );

    // Rebalance: a second worker, a stream on each partition; stop one, time until
    // the other publishes every stream as its own.
    let mut kill_times = Vec::new();
    let mut stop_times = Vec::new();
    let rounds: usize = std::env::var("FLEET_ROUNDS")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(3);
    let survivor = a;
    for round in 0..rounds * 2 {
        let graceful = round % 2 == 1;
        let name = format!("v{round}");
        let mut victim = worker(&name, &broker.bootstrap, &banks);
        let ids: Vec<String> = (0..12).map(|i| format!("r{round}-{i}")).collect();
        // Wait until the victim owns some of the streams.
        let mut seq = 0;
        let theirs = wait(
            "the victim owns streams",
            120,
            || {
                for id in &ids {
                    let (st, _) = survivor.call(
                        "PUT",
                        &format!("/v1/streams/{id}/segments/{seq}"),
                        Some(INGEST),
                        part,
                    );
                    assert_eq!(st, 202);
                }
                seq += 1;
                let view = fleet_view(&survivor);
                let theirs: Vec<String> = ids
                    .iter()
                    .filter(|id| view.get(*id).is_some_and(|s| s["worker"] == name.as_str()))
                    .cloned()
                    .collect();
                (!theirs.is_empty()).then_some(theirs)
            },
            &[&survivor, &victim],
        );
        let t = Instant::now();
        if graceful {
            victim.terminate();
        } else {
            victim.child.kill().unwrap();
            victim.child.wait().unwrap();
        }
        let sname = "m0";
        wait(
            "the survivor runs the victim's streams",
            120,
            || {
                let view = fleet_view(&survivor);
                theirs
                    .iter()
                    .all(|id| {
                        view.get(id)
                            .is_some_and(|s| s["worker"] == sname && s["state"] != "moving")
                    })
                    .then_some(())
            },
            &[&survivor],
        );
        let took = t.elapsed().as_secs_f64() * 1000.0;
        println!(
            "MEASURE rebalance after {} of a worker: {took:.0} ms",
            if graceful { "SIGTERM" } else { "SIGKILL" }
        );
        if graceful {
            stop_times.push(took)
        } else {
            kill_times.push(took)
        }
        drop(victim);
    }
    println!(
        "MEASURE rebalance SIGKILL p50 {:.0} ms p99 {:.0} ms; graceful p50 {:.0} ms p99 {:.0} ms (session timeout 6 s, n={rounds} each)",
        percentile(&mut kill_times, 0.5),
        percentile(&mut kill_times, 0.99),
        percentile(&mut stop_times, 0.5),
        percentile(&mut stop_times, 0.99)
    );
}

/// Media duration of `file` in seconds (ffprobe).
fn duration_secs(file: &Path) -> f64 {
    let out = Command::new("ffprobe")
        .args([
            "-v",
            "error",
            "-show_entries",
            "format=duration",
            "-of",
            "csv=p=0",
        ])
        .arg(file)
        .output()
        .unwrap();
    assert!(out.status.success());
    String::from_utf8(out.stdout)
        .unwrap()
        .trim()
        .parse()
        .unwrap()
}

/// A measurement, not an assertion (`scripts/fleet-measure.sh`): end-to-end latency
/// through the fleet, from a hook's acceptance of a segment to the broker's ack of the
/// escalation its frames led to (`end_to_end_ms` as the owners log it). Two workers;
/// streams pushed in real time, each segment to either worker's hook in turn, so about
/// half of the segments cross from one worker to the other.
#[test]
#[ignore = "a measurement: scripts/fleet-measure.sh"]
fn measure_fleet_end_to_end() {
    let broker = TansuBroker::start().unwrap();
    let dir = tempfile::tempdir().unwrap();
    let (prog, banks) = banked_programme(dir.path());
    let (a, b) = (
        worker("e2e-a", &broker.bootstrap, &banks),
        worker("e2e-b", &broker.bootstrap, &banks),
    );
    wait_ready(&[&a, &b]);
    let streams: usize = std::env::var("FLEET_E2E_STREAMS")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(8);
    let ids: Vec<String> = (0..streams).map(|i| format!("e2e-{i}")).collect();
    let mut pusher = Pusher::new(&prog);
    let n = pusher.parts.len();
    let per_part = Duration::from_secs_f64(duration_secs(&prog) / n as f64);
    let start = Instant::now();
    for seq in 0..n {
        let due = start + per_part * seq as u32;
        std::thread::sleep(due.saturating_duration_since(Instant::now()));
        pusher.push(&ids, seq..seq + 1, &[&a, &b]);
    }
    wait_escalated(&broker.bootstrap, &ids, 5, 120, &[&a, &b]);
    let mut e2e: Vec<f64> = [&a, &b]
        .iter()
        .flat_map(|d| {
            d.stderr()
                .lines()
                .filter_map(|l| l.split("end_to_end_ms=").nth(1))
                .filter_map(|v| v.split_whitespace().next()?.parse().ok())
                .collect::<Vec<f64>>()
        })
        .collect();
    assert_eq!(e2e.len(), ids.len(), "one figure per escalation");
    println!(
        "MEASURE fleet end-to-end (hook accepted -> escalation acked, 2 workers, {} streams in real time): p50 {:.0} ms, p99 {:.0} ms, max {:.0} ms",
        ids.len(),
        percentile(&mut e2e, 0.5),
        percentile(&mut e2e, 0.99),
        e2e.iter().cloned().fold(0.0, f64::max)
    );
}

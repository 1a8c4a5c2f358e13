//! `firebreak run` end to end: a known clip, hashed into a bank, appears inside a pushed
//! live stream; the escalation reaches the JSONL sink, the escalation list and the SSE
//! feed; a responder acknowledges it; an operator changes a threshold (validated and
//! audit-logged) and the new policy version shows on later events; SIGTERM drains.
//! Also: credentials and scopes, HMAC signing, body limits, config errors, and the
//! OpenAPI document against the routes.

mod support;

use std::io::{BufRead, BufReader};
use std::path::Path;
use std::process::Command;
use std::sync::mpsc;

use hmac::{Hmac, Mac};
use serde_json::Value;
use sha2::Sha256;
use support::{ADMIN, INGEST, OPERATOR, READ};

fn events(path: &Path) -> Vec<Value> {
    std::fs::read_to_string(path)
        .unwrap_or_default()
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect()
}

#[test]
fn a_known_clip_in_a_pushed_stream_escalates_end_to_end() {
    let dir = tempfile::tempdir().unwrap();
    let prog = support::programme_with_banked_clip(dir.path());

    let mut d = support::start_in(dir, "[ingest]\nsampling = \"2/s\"\n");

    // The live feed, as the dashboard reads it.
    let (tx, rx) = mpsc::channel::<String>();
    let sse = ureq::get(&format!("{}/v1/events?access_token={READ}", d.base))
        .call()
        .unwrap();
    std::thread::spawn(move || {
        for line in BufReader::new(sse.into_reader()).lines() {
            let Ok(line) = line else { return };
            if tx.send(line).is_err() {
                return;
            }
        }
    });

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

    // The escalation shows in the list...
    let esc = d.wait_with(
        "a crisis escalation",
        60,
        || {
            let list = d.get("/v1/escalations", READ);
            list["escalations"]
                .as_array()
                .unwrap()
                .iter()
                .find(|e| e["stream_id"] == "prog" && e["tier"] == "crisis")
                .cloned()
        },
        // On a timeout, the stream's counters (frames dropped, segments) say why.
        || format!("{:?}", d.call("GET", "/v1/streams/prog", Some(READ), b"")),
    );
    assert_eq!(esc["state"], "open");
    let evidence = esc["evidence"].as_array().unwrap();
    assert!(
        evidence.iter().any(|e| e["type"] == "video_match"
            && e["bank"] == "crisis"
            && e["entry_id"] == "known-clip"),
        "{esc}"
    );
    // ... detected inside the clip (6-16 s of media), not before it.
    let start = esc["media_start"].as_f64().unwrap();
    assert!((6.0..16.0).contains(&start), "media_start {start}");
    // ... and on the live feed.
    let line = d.wait("the SSE escalation", 30, || {
        rx.try_iter().find(|l| {
            l.starts_with("data:") && l.contains("\"stream_id\":\"prog\"") && l.contains("crisis")
        })
    });
    assert!(line.contains(esc["id"].as_str().unwrap()));
    // ... and in the sink, as a CloudEvent keyed by the stream.
    let sink = d.data().join("events.jsonl");
    let first = d.wait("the event in events.jsonl", 30, || {
        events(&sink)
            .into_iter()
            .find(|e| e["data"]["tier"] == "crisis")
    });
    assert_eq!(first["subject"], "prog");
    assert_eq!(first["source"], "urn:firebreak:worker:test-worker");
    let version_before = first["data"]["policy_version"].as_str().unwrap().to_owned();

    // A viewer cannot acknowledge; a responder can, and it is audit-logged.
    let id = esc["id"].as_str().unwrap();
    let ack_path = format!("/v1/escalations/{id}/ack");
    assert_eq!(d.call("POST", &ack_path, Some(READ), b"{}").0, 403);
    let (status, acked) = d.call("POST", &ack_path, Some(OPERATOR), br#"{"note":"on it"}"#);
    assert_eq!(status, 200, "{acked}");
    assert_eq!(acked["state"], "acknowledged");
    assert_eq!(acked["acknowledged"]["by"], "platform");
    let audit = d.get("/v1/audit", OPERATOR);
    assert!(
        audit["entries"]
            .as_array()
            .unwrap()
            .iter()
            .any(|e| e["action"] == "escalation.ack"
                && e["who"] == "platform"
                && e["target"] == id)
    );

    // Resolving closes it for responders; a second resolve is a conflict.
    let resolve_path = format!("/v1/escalations/{id}/resolve");
    let (status, resolved) = d.call("POST", &resolve_path, Some(OPERATOR), b"");
    assert_eq!(status, 200, "{resolved}");
    assert_eq!(resolved["state"], "resolved");
    assert_eq!(resolved["resolved"]["by"], "platform");
    assert_eq!(d.call("POST", &resolve_path, Some(OPERATOR), b"").0, 409);
    assert_eq!(
        d.call("POST", "/v1/escalations/no-such/ack", Some(OPERATOR), b"")
            .0,
        404
    );

    // Thresholds: validated, audit-logged, versioned.
    let rule = "/v1/policy/rules/known-video-live";
    assert_eq!(
        d.call("PATCH", rule, Some(INGEST), br#"{"exit":0.2}"#).0,
        403
    );
    assert_eq!(
        d.call("PATCH", rule, Some(OPERATOR), br#"{"exit":0.2}"#).0,
        403,
        "policy changes need the admin scope"
    );
    let (status, bad) = d.call("PATCH", rule, Some(ADMIN), br#"{"exit":0.9}"#);
    assert_eq!(status, 422, "{bad}");
    assert!(bad["errors"].to_string().contains("exit"), "{bad}");
    let (status, ok) = d.call("PATCH", rule, Some(ADMIN), br#"{"exit":0.2}"#);
    assert_eq!(status, 200, "{ok}");
    let version_after = ok["version"].as_str().unwrap().to_owned();
    assert_ne!(version_after, version_before);
    let policy = d.get("/v1/policy", READ);
    assert_eq!(policy["version"], version_after);
    assert!(policy["toml"].as_str().unwrap().contains("exit = 0.2"));
    let change = d.get("/v1/audit", ADMIN)["entries"]
        .as_array()
        .unwrap()
        .iter()
        .find(|e| e["action"] == "policy.rule")
        .cloned()
        .expect("audit entry for the rule change");
    assert_eq!(change["who"], "ops");
    assert_eq!(change["old"]["version"], version_before.as_str());
    assert_eq!(change["new"]["version"], version_after.as_str());

    // The stream ends: the closing event carries the new policy version.
    assert_eq!(
        d.call("POST", "/v1/streams/prog/end", Some(INGEST), b"").0,
        200
    );
    let closing = d.wait("the closing event", 60, || {
        events(&sink)
            .into_iter()
            .find(|e| e["data"]["kind"] == "ended" || e["data"]["tier"] == "none")
    });
    assert_eq!(closing["data"]["policy_version"], version_after.as_str());
    let listed = d.get("/v1/streams/prog", READ);
    assert_eq!(listed["state"], "ended");

    // Metrics saw it.
    let (status, _) = d.call("GET", "/metrics", None, b"");
    assert_eq!(
        status, 401,
        "metrics need a credential on the main listener"
    );
    let text = d.metrics();
    assert!(
        text.contains("firebreak_escalations_total{tier=\"crisis\"} 1"),
        "{text}"
    );
    assert!(text.contains("firebreak_stage_seconds_count{stage=\"hash\"}"));
    assert!(text.contains("firebreak_end_to_end_seconds_count"));

    // SIGTERM: a clean exit with nothing left in the outbox.
    let status = d.terminate();
    assert!(status.success(), "{status:?}\n{}", d.stderr());
    assert!(d.stderr().contains("undelivered=0"), "{}", d.stderr());
}

fn signed(
    d: &support::Daemon,
    method: &str,
    path: &str,
    body: &[u8],
    secret: &str,
    skew: i64,
) -> u16 {
    signed_twice(d, method, path, body, secret, skew, false).0
}

/// Sends a signed request, and (if `replay`) the very same request again: the
/// statuses of both (0 for the second when not sent).
fn signed_twice(
    d: &support::Daemon,
    method: &str,
    path: &str,
    body: &[u8],
    secret: &str,
    skew: i64,
    replay: bool,
) -> (u16, u16) {
    let ts = (std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_secs() as i64
        + skew)
        .to_string();
    let mut mac = Hmac::<Sha256>::new_from_slice(secret.as_bytes()).unwrap();
    mac.update(format!("{method}\n{path}\n{ts}\n{}", support::sha256_hex(body)).as_bytes());
    let sig: String = mac
        .finalize()
        .into_bytes()
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect();
    let send = || {
        let r = ureq::request(method, &format!("{}{path}", d.base))
            .set("X-Firebreak-Tenant", "partner")
            .set("X-Firebreak-Timestamp", &ts)
            .set("X-Firebreak-Signature", &sig)
            .send_bytes(body);
        support::response(r).0
    };
    let first = send();
    (first, if replay { send() } else { 0 })
}

#[test]
fn credentials_scopes_and_body_limits() {
    let d = support::start("[server]\nmax_body_bytes = 65536\n");
    // Open routes.
    for path in ["/healthz", "/readyz", "/"] {
        assert_eq!(d.call("GET", path, None, b"").0, 200, "{path}");
    }
    // Metrics name every stream: a credential with the read (or metrics) scope.
    assert_eq!(d.call("GET", "/metrics", None, b"").0, 401);
    assert_eq!(d.call("GET", "/metrics", Some(INGEST), b"").0, 403);
    assert_eq!(d.call("GET", "/metrics", Some(READ), b"").0, 200);
    // Nothing under /v1 without credentials; wrong tokens are refused.
    assert_eq!(d.call("GET", "/v1/streams", None, b"").0, 401);
    assert_eq!(d.call("GET", "/v1/streams", Some("nope"), b"").0, 401);
    assert_eq!(
        d.call("PUT", "/v1/streams/s/segments/0", None, b"abc").0,
        401
    );
    assert_eq!(d.call("PUT", "/v1/policy", None, b"x").0, 401);
    // Wrong scopes.
    assert_eq!(
        d.call("PUT", "/v1/streams/s/segments/0", Some(READ), b"abc")
            .0,
        403
    );
    assert_eq!(
        d.call("PUT", "/v1/streams/s/segments/0", Some(OPERATOR), b"abc")
            .0,
        403
    );
    assert_eq!(d.call("GET", "/v1/audit", Some(READ), b"").0, 403);
    assert_eq!(d.call("POST", "/v1/reload", Some(INGEST), b"").0, 403);
    assert_eq!(d.call("GET", "/v1/streams", Some(INGEST), b"").0, 403);
    // Operator implies read.
    assert_eq!(d.call("GET", "/v1/streams", Some(OPERATOR), b"").0, 200);
    // The access_token query works only for the event feed.
    assert_eq!(
        d.call(
            "GET",
            &format!("/v1/streams?access_token={READ}"),
            None,
            b""
        )
        .0,
        401
    );
    // Oversized bodies.
    for (path, token) in [("/v1/streams/s/segments/0", INGEST), ("/v1/policy", ADMIN)] {
        assert_eq!(
            support::status_before_body(&d.base, "PUT", path, token, 65537),
            413,
            "{path}"
        );
    }
    // A body within the limit is taken (a small segment of garbage is accepted).
    assert_eq!(
        d.call(
            "PUT",
            "/v1/streams/s/segments/0",
            Some(INGEST),
            &[7u8; 1000]
        )
        .0,
        200
    );
    // An invalid policy is refused with every issue; the old one stays.
    let before = d.get("/v1/policy", READ)["version"].clone();
    let (status, body) = d.call(
        "PUT",
        "/v1/policy",
        Some(ADMIN),
        b"version = \"x\"\ntiers = [\"a\"]\n[[rule]]\nname = \"r\"\nkind = \"hash_match\"\ntier = \"zz\"\n",
    );
    assert_eq!(status, 422, "{body}");
    assert!(body["errors"].to_string().contains("zz"), "{body}");
    assert_eq!(d.get("/v1/policy", READ)["version"], before);
    // HMAC: a good signature (accepted once, its replay refused), a wrong secret, a
    // stale timestamp, a scope the tenant lacks.
    assert_eq!(
        signed_twice(&d, "GET", "/v1/streams", b"", support::HMAC_SECRET, 0, true),
        (200, 401)
    );
    assert_eq!(signed(&d, "GET", "/v1/streams", b"", "wrong", 0), 401);
    assert_eq!(
        signed(&d, "GET", "/v1/streams", b"", support::HMAC_SECRET, -600),
        401
    );
    assert_eq!(
        signed(&d, "POST", "/v1/reload", b"", support::HMAC_SECRET, 0),
        403,
        "the partner has no operator scope"
    );
    // The daemon counted the refusals.
    let text = d.metrics();
    assert!(text.contains("firebreak_auth_failures_total{reason=\"scope\"}"));
    assert!(text.contains("firebreak_auth_failures_total{reason=\"bad_signature\"}"));
    assert!(text.contains("firebreak_auth_failures_total{reason=\"replay\"} 1"));
}

#[test]
fn config_check_reports_every_problem_with_its_path() {
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("bad.toml");
    std::fs::write(
        &file,
        "[server]\nlisten = \"nowhere\"\ncolour = 1\n[sink]\nkind = \"kafka\"\n[detectors]\nmodels = [\"missing-model\"]\n",
    )
    .unwrap();
    let out = Command::new(env!("CARGO_BIN_EXE_firebreak"))
        .args(["config", "check"])
        .arg(&file)
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(2));
    let err = String::from_utf8_lossy(&out.stderr);
    for want in [
        "server.colour: unknown field",
        "server.listen:",
        "sink.brokers:",
        "sink.topic:",
        "detectors.models[0]:",
    ] {
        assert!(err.contains(want), "{want} missing from:\n{err}");
    }
    // The example configs shipped in deploy/ are valid.
    let compose = Path::new(env!("CARGO_MANIFEST_DIR")).join("../../deploy/compose/firebreak.toml");
    let text = std::fs::read_to_string(&compose).unwrap();
    // Its model path exists only inside the container image.
    let local = text.replace(
        "/opt/firebreak/models",
        &format!("{}/../../models", env!("CARGO_MANIFEST_DIR")),
    );
    let copy = dir.path().join("compose.toml");
    std::fs::write(&copy, local).unwrap();
    let out = Command::new(env!("CARGO_BIN_EXE_firebreak"))
        .args(["config", "check"])
        .arg(&copy)
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
}

/// Banks and policy reload (API and SIGHUP) while a stream keeps running.
#[test]
fn reload_keeps_streams_running() {
    let d = support::start("[ingest]\nsampling = \"1/s\"\n");
    let clip = d.dir.path().join("clip.ts");
    support::encode("testsrc2=size=320x240:rate=25", 6, 25, &clip);
    let bytes = std::fs::read(&clip).unwrap();
    let parts: Vec<&[u8]> = bytes.chunks(bytes.len() / 2 + 1).collect();
    assert_eq!(
        d.call("PUT", "/v1/streams/cam/segments/0", Some(INGEST), parts[0])
            .0,
        200
    );
    d.wait_state("cam", "live");

    // A bank appears on disk; the API reload picks it up.
    let list = d.dir.path().join("new.csv");
    std::fs::write(
        &list,
        "f8f8f0cee0f4a84f06370a22038f63f0b36e2ed596621e1d33e6b39c4e9c9b22,100,e1,test\n",
    )
    .unwrap();
    let out = support::firebreak(
        &[
            "lists",
            "import",
            list.to_str().unwrap(),
            "--format",
            "csv",
            "--bank",
            "extra",
        ],
        &d.data(),
    );
    assert!(out.status.success(), "{out:?}");
    assert_eq!(d.call("POST", "/v1/reload", Some(READ), b"").0, 403);
    assert_eq!(d.call("POST", "/v1/reload", Some(OPERATOR), b"").0, 403);
    let (status, body) = d.call("POST", "/v1/reload", Some(ADMIN), b"");
    assert_eq!(status, 200, "{body}");
    assert_eq!(body["banks"][0][0], "extra", "{body}");

    // SIGHUP does the same, audit-logged as the signal.
    Command::new("kill")
        .args(["-HUP", &d.child.id().to_string()])
        .status()
        .unwrap();
    d.wait("the SIGHUP reload in the audit log", 30, || {
        let audit = d.get("/v1/audit", ADMIN);
        audit["entries"]
            .as_array()
            .unwrap()
            .iter()
            .any(|e| e["who"] == "SIGHUP" && e["action"] == "reload")
            .then_some(())
    });

    // The stream was not dropped: the rest of it decodes to the end.
    assert_eq!(
        d.call("PUT", "/v1/streams/cam/segments/1", Some(INGEST), parts[1])
            .0,
        200
    );
    assert_eq!(
        d.call("POST", "/v1/streams/cam/end", Some(INGEST), b"").0,
        200
    );
    let s = d.wait_state("cam", "ended");
    assert_eq!(s["frames"]["decoded"], 150, "{s}");
}

/// Pulled streams: a file configured in the config file, streams registered and stopped
/// through the API (files refused there); JSON logs carry the stream.
#[test]
fn pulled_streams_are_registered_and_stopped() {
    let dir = tempfile::tempdir().unwrap();
    let clip = dir.path().join("clip.ts");
    support::encode("testsrc2=size=320x240:rate=25", 3, 25, &clip);
    let d = support::start_in(
        dir,
        &format!(
            "[log]\nformat = \"json\"\n[ingest]\nsampling = \"1/s\"\nsource_allowlist = [\"127.0.0.1\"]\n\
             [[streams]]\nid = \"replay\"\nfile = \"{}\"\n",
            clip.display()
        ),
    );
    let s = d.wait_state("replay", "ended");
    assert_eq!(s["source"], "file");
    assert_eq!(s["frames"]["decoded"], 75, "{s}");
    // Through the API a file is refused, whatever the scope allows.
    let spec = serde_json::json!({"id": "replay2", "file": clip});
    let body = spec.to_string();
    assert_eq!(
        d.call("POST", "/v1/streams", Some(READ), body.as_bytes()).0,
        403
    );
    let (status, refused) = d.call("POST", "/v1/streams", Some(INGEST), body.as_bytes());
    assert_eq!(status, 403, "{refused}");
    assert_eq!(d.call("GET", "/v1/streams/replay2", Some(READ), b"").0, 404);
    // Bad requests: no source, two sources, bad sampling, not JSON.
    for bad in [
        r#"{"id":"x"}"#,
        r#"{"id":"x","file":"a","url":"rtmp://h/a"}"#,
        r#"{"id":"x","file":"a","sampling":"fast"}"#,
        "not json",
    ] {
        let (status, body) = d.call("POST", "/v1/streams", Some(INGEST), bad.as_bytes());
        assert_eq!(status, 400, "{bad}: {body}");
    }
    // An RTMP pull that cannot connect keeps retrying until it is stopped.
    let rtmp = r#"{"id":"cam","url":"rtmp://127.0.0.1:9/live/none"}"#;
    assert_eq!(
        d.call("POST", "/v1/streams", Some(INGEST), rtmp.as_bytes())
            .0,
        201
    );
    assert_eq!(
        d.call("POST", "/v1/streams", Some(INGEST), rtmp.as_bytes())
            .0,
        409,
        "the same id twice"
    );
    let (status, last) = d.call("DELETE", "/v1/streams/cam", Some(INGEST), b"");
    assert_eq!(status, 200, "{last}");
    assert_eq!(last["id"], "cam");
    assert_eq!(d.call("GET", "/v1/streams/cam", Some(READ), b"").0, 404);
    assert_eq!(
        d.call("DELETE", "/v1/streams/cam", Some(INGEST), b"").0,
        404
    );
    // JSON log lines; those about the replayed stream carry its id (span). The line is
    // written once the consumer thread has drained the stream's frames.
    let ended = d.wait("the stream's last log line", 30, || {
        let log = d.stderr();
        let lines: Vec<Value> = log
            .lines()
            .map(|l| serde_json::from_str(l).unwrap_or_else(|e| panic!("{e}: {l}")))
            .collect();
        assert!(
            lines
                .iter()
                .all(|l| l["level"].is_string() && l["timestamp"].is_string())
        );
        lines
            .into_iter()
            .find(|l| l["span"]["stream"] == "replay" && l["fields"]["message"] == "stream ended")
    });
    assert_eq!(ended["fields"]["frames"], 3);
}

/// A classifier (a tiny generated ONNX model, run with tract) wired into the policy:
/// a red stream escalates through a classifier rule, a blue one does not.
#[test]
fn classifier_scores_drive_the_policy() {
    let dir = tempfile::tempdir().unwrap();
    let policy = dir.path().join("policy.toml");
    std::fs::write(
        &policy,
        "version = \"red-test\"\ntiers = [\"review\"]\ncooldown_secs = 60\n\
         [[rule]]\nname = \"mostly-red\"\nkind = \"classifier\"\ncategory = \"test_red\"\n\
         enter = 0.9\nexit = 0.5\nk = 2\nn = 3\ntier = \"review\"\n",
    )
    .unwrap();
    let model = Path::new(env!("CARGO_MANIFEST_DIR")).join("../../models/test/softmax_nchw_rgb");
    let d = support::start_in(
        dir,
        &format!(
            "[ingest]\nsampling = \"2/s\"\n[detectors]\nmodels = [\"{}\"]\n[policy]\nfile = \"{}\"\n",
            model.display(),
            policy.display()
        ),
    );
    for colour in ["red", "blue"] {
        let clip = d.dir.path().join(format!("{colour}.ts"));
        support::encode(
            &format!("color=c={colour}:size=160x120:rate=25"),
            4,
            25,
            &clip,
        );
        let bytes = std::fs::read(&clip).unwrap();
        let seg = format!("/v1/streams/{colour}/segments/0");
        assert_eq!(d.call("PUT", &seg, Some(INGEST), &bytes).0, 200);
        let end = format!("/v1/streams/{colour}/end");
        assert_eq!(d.call("POST", &end, Some(INGEST), b"").0, 200);
        d.wait_state(colour, "ended");
    }
    let sink = d.data().join("events.jsonl");
    let all = d.wait("the red stream's close", 30, || {
        let all = events(&sink);
        all.iter()
            .any(|e| e["subject"] == "red" && e["data"]["kind"] == "ended")
            .then_some(all)
    });
    let red = all
        .iter()
        .find(|e| e["subject"] == "red" && e["data"]["kind"] == "escalated")
        .expect("the red stream escalated");
    assert_eq!(red["data"]["tier"], "review");
    let evidence = &red["data"]["evidence"][0];
    assert_eq!(evidence["type"], "classifier", "{red}");
    assert_eq!(evidence["category"], "test_red");
    assert_eq!(evidence["model"], "softmax_nchw_rgb");
    assert!(evidence["score"].as_f64().unwrap() > 0.9);
    assert!(
        all.iter().all(|e| e["subject"] != "blue"),
        "the blue stream must not escalate"
    );
    let timeline = d.get("/v1/streams/red/timeline", READ);
    assert!(timeline["points"].as_array().unwrap().len() >= 6);
    assert_eq!(timeline["tiers"][1], "review");
}

/// Finished streams make room under the stream limit, and their ids can be used again.
#[test]
fn finished_streams_make_room() {
    let d = support::start("[server]\nmax_streams = 2\n[ingest]\nsampling = \"1/s\"\n");
    let clip = d.dir.path().join("clip.ts");
    support::encode("testsrc2=size=160x120:rate=25", 2, 25, &clip);
    let bytes = std::fs::read(&clip).unwrap();
    let push = |id: &str| {
        let seg = format!("/v1/streams/{id}/segments/0");
        d.call("PUT", &seg, Some(INGEST), &bytes).0
    };
    assert_eq!(push("a"), 200);
    assert_eq!(push("b"), 200);
    assert_eq!(push("c"), 503, "two streams are running");
    for id in ["a", "b"] {
        let end = format!("/v1/streams/{id}/end");
        assert_eq!(d.call("POST", &end, Some(INGEST), b"").0, 200);
        d.wait_state(id, "ended");
    }
    assert_eq!(push("c"), 200);
    assert_eq!(push("a"), 200, "a finished id is used again");
    let s = d.get("/v1/streams", READ);
    let ids: Vec<&str> = s["streams"]
        .as_array()
        .unwrap()
        .iter()
        .map(|s| s["id"].as_str().unwrap())
        .collect();
    assert_eq!(ids, ["a", "c"]);
}

/// An HLS stream registered over the API, served by a plain HTTP server.
#[test]
fn an_hls_stream_is_pulled_to_the_end() {
    // The origin is on loopback: allowed explicitly (refused by default).
    let d = support::start("[ingest]\nsampling = \"1/s\"\nsource_allowlist = [\"127.0.0.1/32\"]\n");
    let web = d.dir.path().join("web");
    std::fs::create_dir(&web).unwrap();
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
    let mut server = Command::new("python3")
        .args([
            "-m",
            "http.server",
            "--bind",
            "127.0.0.1",
            &port.to_string(),
        ])
        .current_dir(&web)
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null())
        .spawn()
        .unwrap();
    let url = format!("http://127.0.0.1:{port}/index.m3u8");
    d.wait("the HLS origin", 30, || {
        ureq::get(&url).call().ok().map(|_| ())
    });
    let spec = serde_json::json!({"id": "hls-1", "hls": url}).to_string();
    let (status, created) = d.call("POST", "/v1/streams", Some(INGEST), spec.as_bytes());
    assert_eq!(status, 201, "{created}");
    let s = d.wait_state("hls-1", "ended");
    let _ = server.kill();
    let _ = server.wait();
    assert_eq!(s["source"], "hls");
    assert_eq!(s["frames"]["decoded"], 75, "{s}");
    assert_eq!(s["hls"]["segments"], 3, "{s}");
    assert_eq!(s["hls"]["missing"], 0, "{s}");
}

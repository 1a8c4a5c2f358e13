//! State that survives a restart, on the real daemon restarted on its data directory:
//! incidents with their acknowledgements and resolutions, policy versions made through
//! the API (and their rollback), and the tamper-evident audit log (`firebreak audit
//! verify`, the published head, a change refused when its audit entry cannot be
//! written).

mod support;

use serde_json::Value;
use support::{ADMIN, INGEST, OPERATOR, READ};

fn escalation(d: &support::Daemon, token: &str, id: &str) -> Option<Value> {
    d.get("/v1/escalations", token)["escalations"]
        .as_array()
        .unwrap()
        .iter()
        .find(|e| e["id"] == id)
        .cloned()
}

/// Makes the audit log unwritable (a directory where the file is) until the returned
/// guard puts it back.
fn break_audit(data: std::path::PathBuf) -> impl FnOnce() {
    let log = data.join("audit.jsonl");
    let aside = data.join("audit.jsonl.aside");
    std::fs::rename(&log, &aside).unwrap();
    std::fs::create_dir(&log).unwrap();
    move || {
        std::fs::remove_dir(&log).unwrap();
        std::fs::rename(&aside, &log).unwrap();
    }
}

#[test]
fn acknowledgements_and_resolutions_survive_a_restart() {
    let dir = tempfile::tempdir().unwrap();
    let prog = support::programme_with_banked_clip(dir.path());
    let extra = "[ingest]\nsampling = \"2/s\"\n";
    let d = support::start_in(dir, extra);
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
    let esc = d.wait("a crisis escalation", 60, || {
        d.get("/v1/escalations", READ)["escalations"]
            .as_array()
            .unwrap()
            .iter()
            .find(|e| e["stream_id"] == "prog" && e["tier"] == "crisis")
            .cloned()
    });
    let id = esc["id"].as_str().unwrap().to_owned();
    let (status, acked) = d.call(
        "POST",
        &format!("/v1/escalations/{id}/ack"),
        Some(OPERATOR),
        br#"{"note":"on it"}"#,
    );
    assert_eq!(status, 200, "{acked}");
    // The stream ends, so no later decision changes the incident.
    assert_eq!(
        d.call("POST", "/v1/streams/prog/end", Some(INGEST), b"").0,
        200
    );
    let before = d.wait("the incident closed", 60, || {
        escalation(&d, READ, &id).filter(|e| !e["closed_ms"].is_null())
    });
    assert_eq!(before["state"], "acknowledged");
    assert_eq!(before["acknowledged"]["by"], "platform");
    assert_eq!(before["acknowledged"]["note"], "on it");

    // After a restart: the same incident, in the same state, every field equal.
    let d = support::restart(d, extra);
    let after = escalation(&d, READ, &id).expect("the incident after a restart");
    assert_eq!(after, before);
    // Another tenant still cannot see it.
    assert_eq!(
        d.call(
            "POST",
            &format!("/v1/escalations/{id}/resolve"),
            Some(support::OTHER),
            b""
        )
        .0,
        404
    );

    // A resolution whose audit entry cannot be written is refused and not applied.
    let restore = break_audit(d.data());
    let (status, body) = d.call(
        "POST",
        &format!("/v1/escalations/{id}/resolve"),
        Some(OPERATOR),
        br#"{"note":"done"}"#,
    );
    assert_eq!(status, 500, "{body}");
    assert_eq!(escalation(&d, READ, &id).unwrap()["state"], "acknowledged");
    restore();

    let (status, resolved) = d.call(
        "POST",
        &format!("/v1/escalations/{id}/resolve"),
        Some(OPERATOR),
        br#"{"note":"done"}"#,
    );
    assert_eq!(status, 200, "{resolved}");
    let d = support::restart(d, extra);
    let after = escalation(&d, READ, &id).expect("the resolved incident after a restart");
    assert_eq!(after["state"], "resolved");
    assert_eq!(after["resolved"]["by"], "platform");
    assert_eq!(after["resolved"]["note"], "done");
    assert_eq!(after["acknowledged"], before["acknowledged"]);
    assert_eq!(after["opened_ms"], before["opened_ms"]);
    // Resolved is final, after a restart too.
    assert_eq!(
        d.call(
            "POST",
            &format!("/v1/escalations/{id}/resolve"),
            Some(OPERATOR),
            b""
        )
        .0,
        409
    );
    // The audit log's chain holds across the restarts and the refused write.
    let out = support::firebreak(&["audit", "verify"], &d.data());
    assert!(out.status.success(), "{out:?}");
}

fn policy_version(d: &support::Daemon) -> String {
    d.get("/v1/policy", READ)["version"]
        .as_str()
        .unwrap()
        .to_owned()
}

fn versions(d: &support::Daemon) -> Vec<Value> {
    d.get("/v1/policy/versions", READ)["versions"]
        .as_array()
        .unwrap()
        .clone()
}

#[test]
fn api_policy_changes_survive_a_restart_and_roll_back() {
    let d = support::start("");
    let original = policy_version(&d);
    assert!(original.starts_with("default-1+"), "{original}");
    let listed = versions(&d);
    assert_eq!(listed.len(), 1, "{listed:?}");
    assert_eq!(
        (listed[0]["number"].as_u64(), listed[0]["source"].as_str()),
        (Some(1), Some("file"))
    );

    let (status, patched) = d.call(
        "PATCH",
        "/v1/policy/rules/known-video-live",
        Some(ADMIN),
        br#"{"exit":0.2}"#,
    );
    assert_eq!(status, 200, "{patched}");
    let patched = patched["version"].as_str().unwrap().to_owned();
    assert_ne!(patched, original);

    // A restart keeps the API's version (the policy file did not change).
    let d = support::restart(d, "");
    assert_eq!(policy_version(&d), patched);
    assert!(
        d.get("/v1/policy", READ)["toml"]
            .as_str()
            .unwrap()
            .contains("exit = 0.2")
    );
    // So does SIGHUP (the file, unchanged, is read again).
    std::process::Command::new("kill")
        .args(["-HUP", &d.child.id().to_string()])
        .status()
        .unwrap();
    d.wait("the SIGHUP reload in the audit log", 30, || {
        d.get("/v1/audit", ADMIN)["entries"]
            .as_array()
            .unwrap()
            .iter()
            .any(|e| e["action"] == "reload" && e["target"] == "policy" && e["who"] == "SIGHUP")
            .then_some(())
    });
    assert_eq!(policy_version(&d), patched);

    // Rollback: admin only; to a stored version only; the old policy again.
    let body = br#"{"version": 1}"#;
    assert_eq!(
        d.call("POST", "/v1/policy/rollback", Some(OPERATOR), body)
            .0,
        403
    );
    assert_eq!(
        d.call(
            "POST",
            "/v1/policy/rollback",
            Some(ADMIN),
            br#"{"version": 99}"#
        )
        .0,
        404
    );
    assert_eq!(
        d.call("POST", "/v1/policy/rollback", Some(ADMIN), b"{}").0,
        400
    );
    let (status, rolled) = d.call("POST", "/v1/policy/rollback", Some(ADMIN), body);
    assert_eq!(status, 200, "{rolled}");
    // The version string is the policy's content hash: the original's again.
    assert_eq!(rolled["version"], original.as_str());
    let d = support::restart(d, "");
    assert_eq!(policy_version(&d), original);
    let listed = versions(&d);
    let sources: Vec<&str> = listed
        .iter()
        .map(|v| v["source"].as_str().unwrap())
        .collect();
    assert_eq!(sources, ["file", "policy.rule", "policy.rollback"]);
    assert_eq!(listed[2]["rolled_back_from"], 1);
    let entry = d.get("/v1/audit", ADMIN)["entries"]
        .as_array()
        .unwrap()
        .iter()
        .find(|e| e["action"] == "policy.rollback")
        .cloned()
        .expect("the rollback in the audit log");
    assert_eq!(entry["who"], "ops");
    // The credential: the admin token's sha256, first 8 hex digits.
    let token_id = &support::sha256_hex(ADMIN.as_bytes())[..8];
    assert_eq!(entry["credential"], format!("token:{token_id}"));

    // A policy file that changed since wins at the next start, as a new version.
    let text = d.get("/v1/policy", READ)["toml"]
        .as_str()
        .unwrap()
        .replace("version = \"default-1\"", "version = \"from-file\"");
    assert!(text.contains("from-file"));
    let file = d.dir.path().join("policy.toml");
    std::fs::write(&file, text).unwrap();
    let with_file = format!("[policy]\nfile = \"{}\"\n", file.display());
    let d = support::restart(d, &with_file);
    let from_file = policy_version(&d);
    assert!(from_file.starts_with("from-file+"), "{from_file}");
    assert_eq!(versions(&d).len(), 4);
    // ... and an API change over it survives the next start with the file unchanged.
    let (status, patched) = d.call(
        "PATCH",
        "/v1/policy/rules/known-video-live",
        Some(ADMIN),
        br#"{"exit":0.1}"#,
    );
    assert_eq!(status, 200, "{patched}");
    let d = support::restart(d, &with_file);
    assert_eq!(policy_version(&d), patched["version"].as_str().unwrap());

    // A policy change whose audit entry cannot be written: 500, the policy unchanged.
    let before = policy_version(&d);
    let body = d.get("/v1/policy", READ)["toml"]
        .as_str()
        .unwrap()
        .replace("version = \"from-file\"", "version = \"refused\"");
    let restore = break_audit(d.data());
    let (status, answer) = d.call("PUT", "/v1/policy", Some(ADMIN), body.as_bytes());
    assert_eq!(status, 500, "{answer}");
    assert_eq!(policy_version(&d), before);
    restore();
    let d = support::restart(d, &with_file);
    assert_eq!(policy_version(&d), before);
    assert_eq!(versions(&d).len(), 5);
}

#[test]
fn audit_verify_reports_the_first_bad_line_and_the_head_is_published() {
    let d = support::start("");
    for exit in ["0.2", "0.15", "0.1", "0.2"] {
        let (status, body) = d.call(
            "PATCH",
            "/v1/policy/rules/known-video-live",
            Some(ADMIN),
            format!("{{\"exit\":{exit}}}").as_bytes(),
        );
        assert_eq!(status, 200, "{body}");
    }
    let log = d.data().join("audit.jsonl");
    let text = std::fs::read_to_string(&log).unwrap();
    let lines: Vec<&str> = text.lines().collect();
    assert_eq!(lines.len(), 4);
    let out = support::firebreak(&["audit", "verify"], &d.data());
    let stdout = String::from_utf8_lossy(&out.stdout).into_owned();
    assert!(out.status.success(), "{stdout}");
    // The head it prints is the one the metrics publish, and the sha256 of the last line.
    let head = support::sha256_hex(lines[3].as_bytes());
    assert!(stdout.contains(&head), "{stdout}");
    assert!(
        d.metrics()
            .contains(&format!("firebreak_audit_head{{head=\"{head}\"}} 1")),
        "{}",
        d.metrics()
    );

    let check = |content: String| -> String {
        let copy = d.dir.path().join("copy.jsonl");
        std::fs::write(&copy, content).unwrap();
        let out = support::firebreak(
            &["audit", "verify", "--file", copy.to_str().unwrap()],
            &d.data(),
        );
        assert!(!out.status.success());
        String::from_utf8_lossy(&out.stdout).into_owned()
    };
    // Line 2 modified: line 3 no longer names its hash.
    let mut modified = lines.clone();
    let edited = lines[1].replace("\"who\":\"ops\"", "\"who\":\"someone\"");
    assert_ne!(edited, lines[1]);
    modified[1] = &edited;
    assert!(check(modified.join("\n") + "\n").starts_with("broken at line 3:"));
    // Line 2 deleted: the old line 3, now line 2, names the deleted line.
    let mut deleted = lines.clone();
    deleted.remove(1);
    assert!(check(deleted.join("\n") + "\n").starts_with("broken at line 2:"));
}

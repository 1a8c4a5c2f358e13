//! The push-ingest HTTP hook, run as a platform would use it: `firebreak serve`, segments
//! of real H.264 video PUT over HTTP out of order and duplicated, a garbage stream beside
//! it, and the error statuses.

use std::io::{BufRead, BufReader};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

struct Server {
    child: Child,
    base: String,
}

impl Drop for Server {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn serve() -> Server {
    let mut child = Command::new(env!("CARGO_BIN_EXE_firebreak"))
        .args([
            "serve",
            "--listen",
            "127.0.0.1:0",
            "--max-segment-mib",
            "1",
            "--reorder-window",
            "4",
        ])
        .stdout(Stdio::piped())
        .spawn()
        .unwrap();
    let mut line = String::new();
    BufReader::new(child.stdout.take().unwrap())
        .read_line(&mut line)
        .unwrap();
    let base = line
        .trim()
        .strip_prefix("listening on ")
        .expect("address line")
        .to_owned();
    Server { child, base }
}

fn clip() -> Vec<u8> {
    let dir = tempfile::tempdir().unwrap();
    let out = dir.path().join("clip.ts");
    let ok = Command::new("ffmpeg")
        .args([
            "-v",
            "error",
            "-f",
            "lavfi",
            "-i",
            "testsrc2=size=640x360:rate=30:duration=6",
        ])
        .args([
            "-c:v",
            "libx264",
            "-preset",
            "ultrafast",
            "-g",
            "60",
            "-pix_fmt",
            "yuv420p",
            "-f",
            "mpegts",
        ])
        .arg(&out)
        .status()
        .unwrap()
        .success();
    assert!(ok);
    std::fs::read(out).unwrap()
}

fn put(base: &str, path: &str, body: &[u8]) -> (u16, serde_json::Value) {
    let r = ureq::put(&format!("{base}{path}")).send_bytes(body);
    let resp = match r {
        Ok(r) => r,
        Err(ureq::Error::Status(_, r)) => r,
        Err(e) => panic!("{e}"),
    };
    let status = resp.status();
    let text = resp.into_string().unwrap();
    (
        status,
        serde_json::from_str(&text).unwrap_or(serde_json::Value::Null),
    )
}

fn get(base: &str, path: &str) -> serde_json::Value {
    serde_json::from_str(
        &ureq::get(&format!("{base}{path}"))
            .call()
            .unwrap()
            .into_string()
            .unwrap(),
    )
    .unwrap()
}

fn wait_state(base: &str, id: &str, state: &str) -> serde_json::Value {
    let started = Instant::now();
    loop {
        let s = get(base, &format!("/v1/streams/{id}"));
        if s["state"] == state {
            return s;
        }
        assert!(
            started.elapsed() < Duration::from_secs(60),
            "{id} never reached {state}: {s}"
        );
        std::thread::sleep(Duration::from_millis(20));
    }
}

#[test]
fn pushed_segments_over_http() {
    let server = serve();
    let base = &server.base;
    let bytes = clip();
    let parts: Vec<&[u8]> = bytes.chunks(60_000).collect();
    assert!(parts.len() >= 4);
    // Neighbours swapped, the first of each pair sent twice.
    let mut order = Vec::new();
    for i in (0..parts.len()).step_by(2) {
        if i + 1 < parts.len() {
            order.push(i + 1);
        }
        order.push(i);
        order.push(i);
    }
    let mut results = Vec::new();
    for i in order {
        let (status, body) = put(base, &format!("/v1/streams/cam-1/segments/{i}"), parts[i]);
        assert_eq!(status, 200, "{body}");
        results.push(body["result"].as_str().unwrap().to_owned());
    }
    assert!(results.contains(&"held".to_owned()) && results.contains(&"duplicate".to_owned()));

    // A second stream of garbage beside it.
    let (status, _) = put(base, "/v1/streams/noise/segments/0", &[0x5a; 50_000]);
    assert_eq!(status, 200);

    // Bad requests.
    assert_eq!(
        put(base, "/v1/streams/cam-1/segments/99", b"").0,
        400,
        "empty body"
    );
    assert_eq!(
        put(base, "/v1/streams/cam-1/segments/x", b"abc").0,
        400,
        "bad sequence number"
    );
    assert_eq!(
        put(base, "/v1/streams/bad!id/segments/0", b"abc").0,
        400,
        "bad id"
    );
    assert_eq!(
        put(base, "/v1/streams/cam-1/segments/100", &vec![0u8; 2 << 20]).0,
        413,
        "oversized body"
    );

    let r = ureq::post(&format!("{base}/v1/streams/cam-1/end"))
        .call()
        .unwrap();
    assert_eq!(r.status(), 200);
    let s = wait_state(base, "cam-1", "ended");
    assert_eq!(s["frames"]["decoded"], 180, "{s}");
    assert_eq!(s["frames"]["sampled"], 6);
    assert_eq!(s["segments"]["duplicates"], parts.len().div_ceil(2));
    assert_eq!(s["segments"]["missing"], 0);
    assert_eq!(
        put(base, "/v1/streams/cam-1/segments/101", b"late").0,
        409,
        "after the end"
    );

    ureq::post(&format!("{base}/v1/streams/noise/end"))
        .call()
        .unwrap();
    let noise = wait_state(base, "noise", "ended");
    assert_eq!(noise["frames"]["decoded"], 0);
    let all = get(base, "/v1/streams");
    assert_eq!(all.as_array().unwrap().len(), 2);
}

//! Attacks from the security review, performed against the real daemon (`firebreak run`
//! as a subprocess, loopback only), each asserting that it fails safely and the service
//! keeps running.

mod support;

/// A far-ahead sequence number once made the sequencer insert every number in between
/// (12.6 GB of RSS within seconds, the daemon stopped answering). Now a number above
/// 2^53 - 1 is refused, and a jump to 2^53 - 1 is one counted gap.
#[test]
fn a_far_ahead_sequence_number_is_one_gap_not_a_memory_bomb() {
    let d = support::start("[ingest]\nsampling = \"1/s\"\nreorder_window = 4\n");
    let dir = tempfile::tempdir().unwrap();
    let clip = dir.path().join("clip.ts");
    support::encode("testsrc2=size=320x180:rate=25", 2, 25, &clip);
    let bytes = std::fs::read(&clip).unwrap();
    let put = |seq: &str, body: &[u8]| {
        d.call(
            "PUT",
            &format!("/v1/streams/cam-1/segments/{seq}"),
            Some(support::INGEST),
            body,
        )
    };
    let (status, v) = put("0", &bytes);
    assert_eq!(
        (status, v["result"].as_str()),
        (200, Some("released")),
        "{v}"
    );
    let before = support::rss_kib(&d);

    let (status, v) = put("18446744073709551615", &bytes);
    assert_eq!(status, 400, "{v}");
    assert!(v["error"].as_str().unwrap_or("").contains("at most"), "{v}");
    let (status, v) = put("9007199254740992", &bytes);
    assert_eq!(status, 400, "2^53: {v}");

    let (status, v) = put("9007199254740991", &bytes);
    assert_eq!(status, 200, "{v}");
    assert_eq!(v["result"], "released");
    assert_eq!(v["gap_before"], 9_007_199_254_740_990u64);
    // A number inside the given-up range is late, not a new segment.
    let (status, v) = put("9007199254740990", &bytes);
    assert_eq!((status, v["result"].as_str()), (200, Some("late")), "{v}");

    // Still answering, with the gap counted, and no memory to speak of spent on it.
    let s = d.get("/v1/streams/cam-1", support::READ);
    assert_eq!(s["segments"]["missing"], 9_007_199_254_740_990u64, "{s}");
    let (status, _) = d.call("GET", "/healthz", None, b"");
    assert_eq!(status, 200);
    let after = support::rss_kib(&d);
    assert!(
        after < before + 64 * 1024,
        "RSS grew from {before} KiB to {after} KiB"
    );
    let (status, _) = d.call("POST", "/v1/streams/cam-1/end", Some(support::INGEST), b"");
    assert_eq!(status, 200);
    d.wait_state("cam-1", "ended");
}

/// A pushed stream declaring a size above the maximum input (7682 pixels wide against
/// 7680x4320) is refused before its decoder opens: failed, with the size as the reason,
/// not one frame decoded, and the daemon keeps answering. (The decoder is also opened
/// with the maximum as its pixel cap, so a stream growing mid-stream allocates no
/// larger frame: `firebreak-media`'s ingest tests.)
#[test]
fn an_oversized_pushed_stream_is_refused_before_decoding() {
    let d = support::start("");
    let dir = tempfile::tempdir().unwrap();
    let clip = dir.path().join("wide.ts");
    support::encode("testsrc2=size=7682x16:rate=25", 2, 25, &clip);
    let (status, v) = d.call(
        "PUT",
        "/v1/streams/wide/segments/0",
        Some(support::INGEST),
        &std::fs::read(&clip).unwrap(),
    );
    assert_eq!(status, 200, "{v}");
    let (status, v) = d.call("POST", "/v1/streams/wide/end", Some(support::INGEST), b"");
    assert_eq!(status, 200, "{v}");
    let s = d.wait_state("wide", "failed");
    assert_eq!(
        s["error"], "resolution 7682x16 above the maximum 7680x4320",
        "{s}"
    );
    assert_eq!(
        (
            s["frames"]["decoded"].as_u64(),
            s["frames"]["sampled"].as_u64()
        ),
        (Some(0), Some(0)),
        "{s}"
    );
    let (status, _) = d.call("GET", "/healthz", None, b"");
    assert_eq!(status, 200);
}

/// A pushed stream whose frames have more pixels than the maximum input (8192x4320,
/// 35.4 M pixels, against 7680x4320, 33.2 M) is refused without one frame of its size
/// ever being allocated, during FFmpeg's probe too (which decodes up to 7 H.264 frames
/// to learn the decode delay): the daemon's peak resident memory grows by less than
/// one such frame (8192 x 4320 x 1.5 bytes = 51.8 MiB in 4:2:0).
#[test]
fn an_oversized_stream_allocates_no_frame_of_its_size() {
    let d = support::start("");
    let dir = tempfile::tempdir().unwrap();
    let clip = dir.path().join("huge.ts");
    support::encode("color=c=black:size=8192x4320:rate=8", 1, 8, &clip);
    let bytes = std::fs::read(&clip).unwrap();
    let before = support::peak_rss_kib(&d);
    let (status, v) = d.call(
        "PUT",
        "/v1/streams/huge/segments/0",
        Some(support::INGEST),
        &bytes,
    );
    assert_eq!(status, 200, "{v}");
    let (status, v) = d.call("POST", "/v1/streams/huge/end", Some(support::INGEST), b"");
    assert_eq!(status, 200, "{v}");
    let s = d.wait_state("huge", "failed");
    assert_eq!(
        s["error"], "resolution 8192x4320 above the maximum 7680x4320",
        "{s}"
    );
    let grown = support::peak_rss_kib(&d).saturating_sub(before);
    let frame_kib = 8192 * 4320 * 3 / 2 / 1024;
    eprintln!("peak RSS grew by {grown} KiB (one frame: {frame_kib} KiB)");
    assert!(
        grown < frame_kib,
        "peak RSS grew by {grown} KiB, one frame is {frame_kib} KiB"
    );
}

/// A loopback listener that must see no connection: it accepts without blocking and
/// counts.
struct Victim {
    listener: std::net::TcpListener,
}

impl Victim {
    fn on(ip: &str) -> Victim {
        let listener = std::net::TcpListener::bind((ip, 0)).unwrap();
        listener.set_nonblocking(true).unwrap();
        Victim { listener }
    }

    fn port(&self) -> u16 {
        self.listener.local_addr().unwrap().port()
    }

    /// Connections accepted so far (each one read for whatever it was sent).
    fn connections(&self) -> Vec<String> {
        let mut seen = Vec::new();
        while let Ok((mut conn, _)) = self.listener.accept() {
            use std::io::Read;
            conn.set_nonblocking(false).unwrap();
            conn.set_read_timeout(Some(std::time::Duration::from_millis(200)))
                .unwrap();
            let mut buf = [0u8; 256];
            let n = conn.read(&mut buf).unwrap_or(0);
            seen.push(String::from_utf8_lossy(&buf[..n]).into_owned());
        }
        seen
    }
}

const REFUSED: &str = "source not allowed";

/// Pulled-stream registration was SSRF and local file access: `file: /etc/passwd`, a
/// `gopher://` URL to a local listener (which received the injected bytes) and an `hls`
/// URL to a loopback listener were all answered 201. Now every one is refused with a
/// generic answer, and the listener sees no connection.
#[test]
fn api_sources_cannot_reach_files_local_services_or_other_protocols() {
    let d = support::start("");
    let victim = Victim::on("127.0.0.1");
    let port = victim.port();
    let post = |spec: serde_json::Value| {
        d.call(
            "POST",
            "/v1/streams",
            Some(support::INGEST),
            spec.to_string().as_bytes(),
        )
    };
    let (status, v) = post(serde_json::json!({"id": "f", "file": "/etc/passwd"}));
    assert_eq!(status, 403, "{v}");
    let attacks = [
        ("url", format!("gopher://127.0.0.1:{port}/_SET%20pwned%201")),
        ("url", format!("tcp://127.0.0.1:{port}?listen=1")),
        ("url", format!("udp://127.0.0.1:{port}")),
        ("url", "unix:///run/firebreak.sock".to_owned()),
        ("url", "pipe:0".to_owned()),
        ("url", "concat:/etc/passwd|/etc/hosts".to_owned()),
        ("url", "subfile:,start,0,end,100,:/etc/passwd".to_owned()),
        ("url", format!("http://127.0.0.1:{port}/media.ts")),
        ("url", format!("rtmp://127.0.0.1:{port}/live/key")),
        ("url", format!("srt://127.0.0.1:{port}")),
        ("url", "rtmps://live.example.com/app/key".to_owned()),
        ("url", format!("rtmp://[::ffff:127.0.0.1]:{port}/live/key")),
        ("hls", format!("http://127.0.0.1:{port}/live.m3u8")),
        ("hls", format!("http://localhost:{port}/live.m3u8")),
        ("hls", format!("http://127.1:{port}/live.m3u8")),
        ("hls", "http://169.254.169.254/latest/meta-data/".to_owned()),
        ("hls", "http://10.0.0.1/live.m3u8".to_owned()),
        ("hls", "file:///etc/passwd".to_owned()),
        ("hls", "/etc/passwd".to_owned()),
    ];
    for (i, (kind, url)) in attacks.iter().enumerate() {
        let id = format!("attack-{i}");
        let (status, v) = post(serde_json::json!({"id": id, *kind: url}));
        assert_eq!(status, 400, "{kind} {url}: {v}");
        let error = v["error"].as_str().unwrap_or("");
        assert!(error.starts_with(REFUSED), "{kind} {url}: {v}");
        // The answer says nothing about the target (open port, address class).
        for leak in ["loopback", "private", "resolve", "127.0.0.1", "passwd"] {
            assert!(!error.contains(leak), "{kind} {url}: {error}");
        }
        assert_eq!(
            d.call(
                "GET",
                &format!("/v1/streams/{id}"),
                Some(support::READ),
                b""
            )
            .0,
            404
        );
    }
    assert_eq!(victim.connections(), Vec::<String>::new());
    // The refusals are in the operator log, with their reasons.
    let log = d.stderr();
    assert!(log.contains("stream registration refused"), "{log}");
    assert!(log.contains("(loopback)"), "{log}");
    let (status, _) = d.call("GET", "/healthz", None, b"");
    assert_eq!(status, 200);
}

/// A tiny HTTP origin on loopback answering fixed responses by path (404 otherwise);
/// stops when dropped.
struct Origin {
    port: u16,
    stop: std::sync::Arc<std::sync::atomic::AtomicBool>,
    thread: Option<std::thread::JoinHandle<()>>,
}

impl Origin {
    fn serve(routes: Vec<(String, String)>) -> Origin {
        use std::io::{Read, Write};
        use std::sync::atomic::Ordering;
        let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        listener.set_nonblocking(true).unwrap();
        let port = listener.local_addr().unwrap().port();
        let stop = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
        let flag = stop.clone();
        let thread = std::thread::spawn(move || {
            while !flag.load(Ordering::Acquire) {
                let Ok((mut conn, _)) = listener.accept() else {
                    std::thread::sleep(std::time::Duration::from_millis(10));
                    continue;
                };
                conn.set_nonblocking(false).unwrap();
                conn.set_read_timeout(Some(std::time::Duration::from_secs(2)))
                    .unwrap();
                let mut head = Vec::new();
                let mut byte = [0u8; 1];
                while !head.ends_with(b"\r\n\r\n") && head.len() < 8192 {
                    match conn.read(&mut byte) {
                        Ok(1) => head.push(byte[0]),
                        _ => break,
                    }
                }
                let head = String::from_utf8_lossy(&head);
                let path = head.split(' ').nth(1).unwrap_or("").to_owned();
                let response = routes
                    .iter()
                    .find(|(p, _)| *p == path)
                    .map(|(_, r)| r.clone())
                    .unwrap_or_else(|| {
                        "HTTP/1.1 404 Not Found\r\nContent-Length: 0\r\nConnection: close\r\n\r\n"
                            .to_owned()
                    });
                let _ = conn.write_all(response.as_bytes());
            }
        });
        Origin {
            port,
            stop,
            thread: Some(thread),
        }
    }
}

impl Drop for Origin {
    fn drop(&mut self) {
        self.stop.store(true, std::sync::atomic::Ordering::Release);
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

fn ok(content_type: &str, body: &str) -> String {
    format!(
        "HTTP/1.1 200 OK\r\nContent-Type: {content_type}\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{body}",
        body.len()
    )
}

/// An allowed origin (loopback, allowed by the config) cannot send the worker elsewhere:
/// a redirect to a loopback address outside the allow-list, and a playlist whose
/// segments are on that address or are local files, reach neither (the file is a real
/// clip: had it been read, frames would have been decoded).
#[test]
fn an_allowed_origin_cannot_redirect_the_worker_or_name_local_files() {
    let d = support::start("[ingest]\nsource_allowlist = [\"127.0.0.1/32\"]\n");
    let victim = Victim::on("127.0.0.2");
    let vport = victim.port();
    let clip = d.dir.path().join("local.ts");
    support::encode("testsrc2=size=160x120:rate=25", 2, 25, &clip);
    let playlist = format!(
        "#EXTM3U\n#EXT-X-TARGETDURATION:2\n#EXT-X-MEDIA-SEQUENCE:0\n\
         #EXTINF:2,\nhttp://127.0.0.2:{vport}/seg0.ts\n\
         #EXTINF:2,\nfile://{}\n\
         #EXT-X-ENDLIST\n",
        clip.display()
    );
    let origin = Origin::serve(vec![
        (
            "/redirect.m3u8".to_owned(),
            format!(
                "HTTP/1.1 302 Found\r\nLocation: http://127.0.0.2:{vport}/live.m3u8\r\nContent-Length: 0\r\nConnection: close\r\n\r\n"
            ),
        ),
        (
            "/live.m3u8".to_owned(),
            ok("application/vnd.apple.mpegurl", &playlist),
        ),
    ]);
    let post = |id: &str, path: &str| {
        let spec =
            serde_json::json!({"id": id, "hls": format!("http://127.0.0.1:{}{path}", origin.port)});
        d.call(
            "POST",
            "/v1/streams",
            Some(support::INGEST),
            spec.to_string().as_bytes(),
        )
    };

    let (status, v) = post("redirected", "/redirect.m3u8");
    assert_eq!(status, 201, "{v}");
    // Two failed playlist loads: the redirect was followed to its target's address
    // check, and refused there.
    d.wait("two refused playlist loads", 60, || {
        let s = d.get("/v1/streams/redirected", support::READ);
        (s["hls"]["reload_errors"].as_u64() >= Some(2)).then_some(())
    });
    let (status, _) = d.call(
        "DELETE",
        "/v1/streams/redirected",
        Some(support::INGEST),
        b"",
    );
    assert_eq!(status, 200);

    let (status, v) = post("elsewhere", "/live.m3u8");
    assert_eq!(status, 201, "{v}");
    let s = d.wait_state("elsewhere", "ended");
    assert_eq!(s["hls"]["reloads"], 1, "{s}");
    assert_eq!(s["hls"]["segments"], 0, "{s}");
    assert_eq!(s["hls"]["missing"], 2, "{s}");
    assert_eq!(s["frames"]["decoded"], 0, "{s}");

    assert_eq!(victim.connections(), Vec::<String>::new());
    let log = d.stderr();
    assert!(
        log.contains("HLS fetch refused by the source policy"),
        "{log}"
    );
    assert!(
        log.contains("a remote playlist may only name http(s) URIs"),
        "{log}"
    );
}

/// A pushed segment that is a manifest naming another address (a DASH MPD: FFmpeg
/// probes it from pushed bytes and would fetch its segments): the demuxer may open
/// nothing, since FFmpeg's protocol whitelist is empty for pushed bytes.
#[test]
fn a_pushed_manifest_opens_nothing() {
    let d = support::start("");
    let victim = Victim::on("127.0.0.1");
    let body = format!(
        r#"<?xml version="1.0" encoding="UTF-8"?>
<MPD xmlns="urn:mpeg:dash:schema:mpd:2011" profiles="urn:mpeg:dash:profile:isoff-live:2011" type="static" mediaPresentationDuration="PT2S" minBufferTime="PT1S">
  <Period>
    <AdaptationSet mimeType="video/mp4">
      <Representation id="v" bandwidth="100000" width="160" height="120" codecs="avc1.42c00d">
        <BaseURL>http://127.0.0.1:{}/</BaseURL>
        <SegmentTemplate initialization="init.mp4" media="seg$Number$.m4s" startNumber="1" duration="2" timescale="1"/>
      </Representation>
    </AdaptationSet>
  </Period>
</MPD>
"#,
        victim.port()
    );
    let (status, v) = d.call(
        "PUT",
        "/v1/streams/pl/segments/0",
        Some(support::INGEST),
        body.as_bytes(),
    );
    assert_eq!(status, 200, "{v}");
    let (status, _) = d.call("POST", "/v1/streams/pl/end", Some(support::INGEST), b"");
    assert_eq!(status, 200);
    let s = d.wait("the stream to finish", 60, || {
        let s = d.get("/v1/streams/pl", support::READ);
        matches!(s["state"].as_str(), Some("ended" | "failed")).then_some(s)
    });
    assert_eq!(s["frames"]["decoded"], 0, "{s}");
    assert_eq!(victim.connections(), Vec::<String>::new());
}

/// Sends a request's head and none of its announced body; returns the status the
/// server answers without it (the read gives up after 20 s: a server waiting for the
/// body answers nothing, and the test fails).
fn status_without_body(base: &str, head: &str) -> Option<u16> {
    use std::io::{Read, Write};
    let addr = base.trim_start_matches("http://");
    let mut conn = std::net::TcpStream::connect(addr).unwrap();
    conn.set_read_timeout(Some(std::time::Duration::from_secs(20)))
        .unwrap();
    write!(conn, "{head}Host: {addr}\r\n\r\n").unwrap();
    let mut buf = [0u8; 64];
    let n = conn.read(&mut buf).ok()?;
    String::from_utf8_lossy(&buf[..n])
        .split(' ')
        .nth(1)
        .and_then(|s| s.parse().ok())
}

/// A request carrying `X-Firebreak-Signature` once had its whole body buffered and
/// hashed before the key and timestamp were checked, even with no key for its tenant.
/// Now the credentials that need no body are checked first: an unknown tenant, a stale
/// timestamp or a malformed signature is answered 401 while the body is still unsent.
#[test]
fn signed_requests_are_refused_before_their_body_is_read() {
    let d = support::start("[server]\nmax_body_bytes = 1048576\n");
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_secs();
    let sig = "ab".repeat(32);
    for (what, tenant, ts, sig) in [
        ("unknown tenant", "nobody", now, sig.as_str()),
        ("stale timestamp", "partner", now - 3600, sig.as_str()),
        ("malformed signature", "partner", now, "zz"),
    ] {
        let head = format!(
            "PUT /v1/streams/s/segments/0 HTTP/1.1\r\nContent-Length: 1000000\r\n\
             X-Firebreak-Signature: {sig}\r\nX-Firebreak-Tenant: {tenant}\r\n\
             X-Firebreak-Timestamp: {ts}\r\n"
        );
        assert_eq!(status_without_body(&d.base, &head), Some(401), "{what}");
    }
    let (status, _) = d.call("GET", "/healthz", None, b"");
    assert_eq!(status, 200);
}

/// Every answer carries the security headers; the dashboard's CSP allows exactly the
/// inline script and style of the page served (their sha256, computed here with
/// Python's hashlib; the script includes the shared tuning panel, `assets/tune.js`)
/// and nothing else. The browser test (`dashboard.rs`) shows the page still works
/// under it.
#[test]
fn every_answer_carries_security_headers() {
    let d = support::start("");
    let html = ureq::get(&format!("{}/", d.base))
        .call()
        .unwrap()
        .into_string()
        .unwrap();
    let tune = std::fs::read_to_string(
        std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("assets/tune.js"),
    )
    .unwrap();
    assert!(
        html.contains(&tune),
        "the tuning panel's script is in the page"
    );
    assert!(!html.contains("/*@tune*/"));
    let inner = |open: &str, close: &str| {
        let s = html.find(open).unwrap() + open.len();
        let e = s + html[s..].find(close).unwrap();
        html[s..e].to_owned()
    };
    let sha256_b64 = |text: &str| {
        use std::io::Write;
        let mut py = std::process::Command::new("python3")
            .args([
                "-c",
                "import sys,hashlib,base64;print(base64.b64encode(hashlib.sha256(sys.stdin.buffer.read()).digest()).decode())",
            ])
            .stdin(std::process::Stdio::piped())
            .stdout(std::process::Stdio::piped())
            .spawn()
            .unwrap();
        py.stdin.take().unwrap().write_all(text.as_bytes()).unwrap();
        let out = py.wait_with_output().unwrap();
        String::from_utf8(out.stdout).unwrap().trim().to_owned()
    };
    let script = sha256_b64(&inner("<script>", "</script>"));
    let style = sha256_b64(&inner("<style>", "</style>"));
    for (method, path, token) in [
        ("GET", "/", None),
        ("GET", "/healthz", None),
        ("GET", "/v1/streams", Some(support::READ)),
        ("GET", "/v1/streams", None),
        ("GET", "/nowhere", None),
    ] {
        let mut r = ureq::request(method, &format!("{}{path}", d.base));
        if let Some(t) = token {
            r = r.set("Authorization", &format!("Bearer {t}"));
        }
        let resp = match r.call() {
            Ok(r) => r,
            Err(ureq::Error::Status(_, r)) => r,
            Err(e) => panic!("{e}"),
        };
        assert_eq!(
            resp.header("x-content-type-options"),
            Some("nosniff"),
            "{path}"
        );
        assert_eq!(resp.header("x-frame-options"), Some("DENY"), "{path}");
        assert_eq!(
            resp.header("referrer-policy"),
            Some("no-referrer"),
            "{path}"
        );
        assert_eq!(
            resp.header("content-security-policy"),
            Some(
                format!(
                    "default-src 'none'; script-src 'sha256-{script}'; style-src 'sha256-{style}'; \
                     connect-src 'self'; img-src 'self' data: blob:; frame-ancestors 'none'; \
                     base-uri 'none'; form-action 'none'"
                )
                .as_str()
            ),
            "{path}"
        );
    }
}

/// One-byte PUTs once filled `max_streams` for ever (an idle pushed stream never
/// ended). Now a pushed stream with no segment for `idle_timeout_secs` is ended, fails
/// (bytes but no frame), and its slot is free for the next stream.
#[test]
fn idle_pushed_streams_end_and_free_their_slots() {
    let d = support::start("[server]\nmax_streams = 2\n[ingest]\nidle_timeout_secs = 1\n");
    let put = |id: &str| {
        d.call(
            "PUT",
            &format!("/v1/streams/{id}/segments/0"),
            Some(support::INGEST),
            b"x",
        )
        .0
    };
    assert_eq!(put("squat-1"), 200);
    assert_eq!(put("squat-2"), 200);
    assert_eq!(put("real"), 503, "both slots taken");
    for id in ["squat-1", "squat-2"] {
        let s = d.wait_state(id, "failed");
        assert!(
            s["error"]
                .as_str()
                .unwrap_or("")
                .starts_with("no video frame could be decoded from 1 pushed bytes"),
            "{s}"
        );
    }
    assert_eq!(put("real"), 200, "a finished stream made room");
    let log = d.stderr();
    assert!(log.contains("idle pushed stream ended"), "{log}");
}

/// Tenants were global: tenant B could stop, end or hijack tenant A's stream, read and
/// resolve A's escalations, and replace the policy; every event carried the first
/// configured tenant. Now streams and incidents have an owner, other tenants get 404,
/// lists and timelines are filtered, events carry the owner, and policy changes need
/// the admin scope.
#[test]
fn tenants_cannot_see_or_touch_each_others_streams_and_incidents() {
    use support::{ADMIN, INGEST, OPERATOR, OTHER, READ};
    let dir = tempfile::tempdir().unwrap();
    let prog = support::programme_with_banked_clip(dir.path());
    let d = support::start_in(
        dir,
        "[ingest]\nsampling = \"2/s\"\nsource_allowlist = [\"127.0.0.1\"]\n",
    );
    let bytes = std::fs::read(prog).unwrap();
    let parts: Vec<&[u8]> = bytes.chunks(200_000).collect();
    let put = |token: &str, id: &str, seq: usize, body: &[u8]| {
        d.call(
            "PUT",
            &format!("/v1/streams/{id}/segments/{seq}"),
            Some(token),
            body,
        )
        .0
    };
    // B watches the live feed (SSE) from before anything happens.
    let feed = {
        use std::io::BufRead;
        let resp = ureq::get(&format!("{}/v1/events", d.base))
            .set("Authorization", &format!("Bearer {OTHER}"))
            .call()
            .unwrap();
        let (tx, rx) = std::sync::mpsc::channel::<String>();
        std::thread::spawn(move || {
            for line in std::io::BufReader::new(resp.into_reader()).lines() {
                let Ok(line) = line else { return };
                if tx.send(line).is_err() {
                    return;
                }
            }
        });
        rx
    };
    // A's stream, with the known clip in it.
    for (i, part) in parts.iter().enumerate() {
        assert_eq!(put(INGEST, "a-cam", i, part), 200);
    }
    let esc = d.wait("A's escalation", 60, || {
        let v = d.get("/v1/escalations", OPERATOR);
        v["escalations"].as_array().and_then(|a| a.first().cloned())
    });
    assert_eq!(esc["tenant"], "platform");
    let id = esc["id"].as_str().unwrap().to_owned();

    // B cannot see, hijack, end, stop or read A's stream.
    assert_eq!(d.call("GET", "/v1/streams/a-cam", Some(OTHER), b"").0, 404);
    let listed = d.get("/v1/streams", OTHER);
    assert_eq!(listed["streams"], serde_json::json!([]), "{listed}");
    assert_eq!(put(OTHER, "a-cam", 0, b"junk"), 404, "hijack at seq 0");
    assert_eq!(put(OTHER, "a-cam", 999, b"junk"), 404);
    assert_eq!(
        d.call("POST", "/v1/streams/a-cam/end", Some(OTHER), b"").0,
        404
    );
    assert_eq!(
        d.call("DELETE", "/v1/streams/a-cam", Some(OTHER), b"").0,
        404
    );
    assert_eq!(
        d.call("GET", "/v1/streams/a-cam/timeline", Some(OTHER), b"")
            .0,
        404
    );
    // ... nor A's escalations.
    let theirs = d.get("/v1/escalations", OTHER);
    assert_eq!(theirs["escalations"], serde_json::json!([]), "{theirs}");
    for action in ["ack", "resolve"] {
        let (status, _) = d.call(
            "POST",
            &format!("/v1/escalations/{id}/{action}"),
            Some(OTHER),
            b"{}",
        );
        assert_eq!(status, 404, "{action}");
    }
    // ... nor change the policy (an operator of any tenant: admin only).
    let policy = d.get("/v1/policy", READ)["toml"]
        .as_str()
        .unwrap()
        .to_owned();
    assert_eq!(
        d.call("PUT", "/v1/policy", Some(OTHER), policy.as_bytes())
            .0,
        403
    );
    assert_eq!(
        d.call("PUT", "/v1/policy", Some(OPERATOR), policy.as_bytes())
            .0,
        403
    );
    assert_eq!(
        d.call("PUT", "/v1/policy", Some(ADMIN), policy.as_bytes())
            .0,
        200
    );

    // B's own stream of the same content: B's, and A does not see it.
    for (i, part) in parts.iter().enumerate() {
        assert_eq!(put(OTHER, "b-cam", i, part), 200);
    }
    d.wait("B's escalation", 60, || {
        let v = d.get("/v1/escalations", OTHER);
        (v["escalations"].as_array().map(Vec::len) == Some(1)).then_some(())
    });
    // B's feed carried B's stream and escalation, and nothing of A's (which came
    // first: had A's events reached B, they would be ahead of B's escalation).
    let mut seen = Vec::new();
    loop {
        let line = feed
            .recv_timeout(std::time::Duration::from_secs(60))
            .expect("B's escalation on B's feed");
        if let Some(data) = line.strip_prefix("data:") {
            let v: serde_json::Value = serde_json::from_str(data.trim()).unwrap_or_default();
            if v.is_object() {
                seen.push(v.clone());
            }
            if v["stream_id"] == "b-cam" {
                break;
            }
        }
    }
    let foreign = seen
        .iter()
        .find(|v| v["tenant"] != "other" || !v.to_string().contains("b-cam"));
    assert_eq!(foreign, None, "of {} events on B's feed", seen.len());
    let mine = d.get("/v1/escalations", READ);
    let streams: Vec<&str> = mine["escalations"]
        .as_array()
        .unwrap()
        .iter()
        .map(|e| e["stream_id"].as_str().unwrap())
        .collect();
    assert_eq!(streams, ["a-cam"]);
    // An admin sees both; A's incident is still open (B's attempts changed nothing).
    let all = d.get("/v1/escalations", ADMIN);
    let mut owners: Vec<(String, String, String)> = all["escalations"]
        .as_array()
        .unwrap()
        .iter()
        .map(|e| {
            (
                e["stream_id"].as_str().unwrap().to_owned(),
                e["tenant"].as_str().unwrap().to_owned(),
                e["state"].as_str().unwrap().to_owned(),
            )
        })
        .collect();
    owners.sort();
    assert_eq!(
        owners,
        [
            ("a-cam".to_owned(), "platform".to_owned(), "open".to_owned()),
            ("b-cam".to_owned(), "other".to_owned(), "open".to_owned())
        ]
    );
    // A's stream ends; its id stays A's: B can neither push to it nor register it.
    assert_eq!(
        d.call("POST", "/v1/streams/a-cam/end", Some(INGEST), b"").0,
        200
    );
    d.wait_state("a-cam", "ended");
    assert_eq!(put(OTHER, "a-cam", 0, b"junk"), 404);
    let takeover = serde_json::json!({"id": "a-cam", "url": "rtmp://127.0.0.1:9/live/x"});
    let (status, v) = d.call(
        "POST",
        "/v1/streams",
        Some(OTHER),
        takeover.to_string().as_bytes(),
    );
    assert_eq!(status, 409, "{v}");
    assert_eq!(
        d.call("GET", "/v1/streams/a-cam/timeline", Some(OTHER), b"")
            .0,
        404
    );
    assert_eq!(
        d.call("GET", "/v1/streams/a-cam/timeline", Some(READ), b"")
            .0,
        200
    );
    // Events carry the owner's tenant.
    let events = d.wait("both escalation events delivered", 60, || {
        let text = std::fs::read_to_string(d.data().join("events.jsonl")).ok()?;
        let tenants: Vec<(String, String)> = text
            .lines()
            .filter_map(|l| serde_json::from_str::<serde_json::Value>(l).ok())
            .filter(|v| v["data"]["kind"] == "escalated")
            .map(|v| {
                (
                    v["data"]["stream_id"].as_str().unwrap_or("").to_owned(),
                    v["data"]["tenant"].as_str().unwrap_or("").to_owned(),
                )
            })
            .collect();
        (tenants.len() == 2).then_some(tenants)
    });
    let mut events = events;
    events.sort();
    assert_eq!(
        events,
        [
            ("a-cam".to_owned(), "platform".to_owned()),
            ("b-cam".to_owned(), "other".to_owned())
        ]
    );
}

/// One tenant could take every stream slot. Now each tenant runs at most
/// `max_streams_per_tenant` streams: beyond it, 429 with `Retry-After`, and another
/// tenant still gets a slot.
#[test]
fn one_tenant_cannot_take_every_slot() {
    use support::{INGEST, OTHER};
    let d = support::start("[server]\nmax_streams = 4\nmax_streams_per_tenant = 2\n");
    // (status, Retry-After) of a one-byte first segment.
    let put = |token: &str, id: &str| {
        let r = ureq::put(&format!("{}/v1/streams/{id}/segments/0", d.base))
            .set("Authorization", &format!("Bearer {token}"))
            .send_bytes(b"x");
        let r = match r {
            Ok(r) | Err(ureq::Error::Status(_, r)) => r,
            Err(e) => panic!("{e}"),
        };
        (r.status(), r.header("retry-after").map(str::to_owned))
    };
    assert_eq!(put(INGEST, "a1"), (200, None));
    assert_eq!(put(INGEST, "a2"), (200, None));
    assert_eq!(put(INGEST, "a3"), (429, Some("10".to_owned())));
    // Segments of a running stream are still taken.
    let (status, v) = d.call("PUT", "/v1/streams/a1/segments/1", Some(INGEST), b"y");
    assert_eq!(status, 200, "{v}");
    assert_eq!(put(OTHER, "b1"), (200, None));
    let listed = d.get("/v1/streams", support::ADMIN);
    assert_eq!(listed["streams"].as_array().unwrap().len(), 3, "{listed}");
}

/// Names of the daemon's threads (`/proc/PID/task/*/comm`, 15 characters at most).
fn thread_names(d: &support::Daemon) -> Vec<String> {
    let tasks = std::fs::read_dir(format!("/proc/{}/task", d.child.id())).unwrap();
    tasks
        .filter_map(|t| std::fs::read_to_string(t.ok()?.path().join("comm")).ok())
        .map(|c| c.trim().to_owned())
        .collect()
}

/// DELETE once returned before the stream's threads exited, so a register/delete loop
/// piled up decoder and consumer threads (and an id could be reused while the old
/// stream still ran). Now DELETE answers once they have exited.
#[test]
fn a_register_delete_loop_leaves_no_threads_behind() {
    let d = support::start("[ingest]\nsource_allowlist = [\"127.0.0.1\"]\n");
    // An RTMP pull that keeps reconnecting (nothing listens on the discard port).
    let spec = r#"{"id":"churn","url":"rtmp://127.0.0.1:9/live/x"}"#;
    for round in 0..20 {
        let (status, v) = d.call(
            "POST",
            "/v1/streams",
            Some(support::INGEST),
            spec.as_bytes(),
        );
        assert_eq!(status, 201, "round {round}: {v}");
        let (status, v) = d.call("DELETE", "/v1/streams/churn", Some(support::INGEST), b"");
        assert_eq!(status, 200, "round {round}: {v}");
        let left: Vec<String> = thread_names(&d)
            .into_iter()
            .filter(|n| n.ends_with("-churn"))
            .collect();
        assert_eq!(left, Vec::<String>::new(), "round {round}");
    }
    assert_eq!(
        d.call("GET", "/v1/streams/churn", Some(support::READ), b"")
            .0,
        404
    );
}
